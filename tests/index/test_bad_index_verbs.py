"""Every verb that answers from an index (`fournil ask`, `fournil serve --index`, `fournil chat
--index`) given a missing, half-built, foreign or damaged index folder: exit status 2 and an
error naming the folder or file and what is wrong, before any model is loaded, never an
answer from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fournil.cli import main
from fournil.index.store import MANIFEST

QUESTION = "Dans quelle famille d'araignées se trouve le genre Deinopis ?"


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _scores(index: Path) -> Path:
    """bm25s's score matrix, which loads silently when damaged."""
    return next(p for p in (index / "bm25s").iterdir() if p.name.startswith("data."))


def bad_index(case: str, good: Path, tmp_path: Path) -> tuple[Path, str]:
    """An index folder of the given kind of bad, made from a copy of a good one, and what the
    error must say."""
    index = tmp_path / "index"
    if case == "missing":
        return tmp_path / "nowhere", "nowhere: no passage index here"
    partial = tmp_path / "index.partial"
    shutil.copytree(good, partial if case.startswith("interrupted") else index)
    if case == "interrupted":  # `fournil index` killed: only its work folder is there
        return index, "index.partial is a build that is running or was interrupted"
    if case == "interrupted, its work folder":  # index.json in it, the stage not finished
        return partial, "index.partial: a build's work folder"
    manifest = json.loads((index / MANIFEST).read_text())
    if case == "another version":
        (index / MANIFEST).write_text(json.dumps({**manifest, "format_version": 0,
                                                  "fournil_version": "0.0.1"}))
        return index, "index format 0 (built by fournil 0.0.1); this fournil"
    if case == "corrupt manifest":
        (index / MANIFEST).write_text(json.dumps(manifest)[:-20])  # cut short
        return index, "index.json: corrupt"
    if case == "corrupt scores":
        _flip_a_byte(_scores(index))
        return index, f"{_scores(index).name}: corrupt"
    raise AssertionError(case)


CASES = ("missing", "interrupted", "interrupted, its work folder", "another version",
         "corrupt manifest", "corrupt scores")


def verb_argv(verb: str, index: Path, model: Path) -> list[str]:
    if verb == "ask":
        return ["ask", "--index", str(index), "--model", str(model), QUESTION]
    if verb == "serve":
        return ["serve", "--model", str(model), "--index", str(index)]
    return ["chat", str(model), "--index", str(index)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("verb", ("ask", "serve", "chat"))
def test_a_bad_index_is_a_clear_error_for_every_verb(verb, case, wiki_index_dir,
                                                     tiny_chat_model_dir, tmp_path, capsys):
    index, message = bad_index(case, wiki_index_dir, tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(verb_argv(verb, index, tiny_chat_model_dir))
    out, err = capsys.readouterr()
    assert stopped.value.code == 2 and out == ""
    assert err.startswith(f"fournil {verb}: error: ") and message in err, err
    assert "Traceback" not in err
