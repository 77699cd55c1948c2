"""`fournil index` then `fournil ask`, as a user runs them: the JSON an answer prints, a refusal
when nothing relevant is indexed or the model cites nothing, clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fournil.index.store import MANIFEST
from fournil.ingest.config import SourceSpec

SOURCE_KEYS = {"ref", "id", "passage", "title", "author", "date", "source", "license", "url",
               "quote", "verbatim", "start", "end"}


def fournil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fournil", "-q", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def index_dir(data_stages, tmp_path_factory) -> Path:
    """Wikipedia and the RGAA, indexed by `fournil index` in passages short enough for the
    tiny test model's 512-token context."""
    run = tmp_path_factory.mktemp("ask-run")
    layout = data_stages([SourceSpec("wikipedia-fr-sample"), SourceSpec("etalab-rgaa")], run)
    done = fournil("index", "--input", str(layout.curate), "--out", str(run / "index"),
                   "--set", "index.min_chars=100", "--set", "index.max_chars=200")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["passages"] > 1000
    return run / "index"


def ask(index_dir: Path, model: Path, question: str, *flags: str) -> subprocess.CompletedProcess:
    return fournil("ask", "--index", str(index_dir), "--model", str(model), "-k", "1",
                   "--json", *flags, question)


def _check_shape(reply: dict, question: str) -> None:
    assert set(reply) == {"question", "answer", "refused", "reason", "sources", "passages",
                          "relevance", "model_answer", "constrained"}
    assert reply["question"] == question and isinstance(reply["answer"], str)
    for p in reply["passages"]:
        assert {"ref", "passage", "id", "title", "license", "score", "start", "end"} <= set(p)
        assert p["license"] in ("CC-BY-SA-4.0", "LicenseRef-Etalab-1.0")
    for s in reply["sources"]:
        assert set(s) == SOURCE_KEYS


@pytest.mark.parametrize("flags, constrained", [((), True), (("--unconstrained",), False)])
def test_ask_json_with_a_real_small_model(index_dir, tiny_chat_model_dir, flags, constrained):
    """A random 2-layer model does not cite: the answer is a refusal that says why, with the
    passages it was shown and what it wrote; its quotes were constrained unless told not."""
    question = "Quel logiciel permet de contrôler l'accessibilité des documents PDF ?"
    done = ask(index_dir, tiny_chat_model_dir, question, "--max-new-tokens", "16", *flags)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    _check_shape(reply, question)
    assert reply["constrained"] is constrained
    assert reply["relevance"] > 0.9 and len(reply["passages"]) == 1
    assert reply["passages"][0]["id"] == "etalab/rgaa-methodologie/index"
    assert isinstance(reply["model_answer"], str) and reply["model_answer"]
    assert reply["sources"] == [] and reply["refused"] is True
    assert reply["reason"] in ("no_citation", "sources_do_not_answer")
    assert reply["answer"] != reply["model_answer"]  # the refusal, not the model's words


def test_ask_refuses_when_nothing_relevant_is_indexed(index_dir, tiny_chat_model_dir):
    question = "Quelle est la recette de la pâte à crêpes ?"
    done = ask(index_dir, tiny_chat_model_dir, question)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    _check_shape(reply, question)
    assert reply["refused"] is True and reply["reason"] == "nothing_relevant"
    assert reply["model_answer"] is None and reply["sources"] == []
    assert "rien dans les documents" in reply["answer"]
    text = fournil("ask", "--index", str(index_dir), "--model", str(tiny_chat_model_dir),
                   question)
    assert text.returncode == 0 and text.stdout.strip() == reply["answer"]


@pytest.mark.parametrize("question, message", [
    ("", "empty question"),
    ("Qui ? " * 20_000, "119999 characters long, over the 1000"),  # ~120 kB, stripped
])
def test_ask_bad_questions_are_clear_errors(index_dir, tiny_chat_model_dir, question, message):
    done = ask(index_dir, tiny_chat_model_dir, question)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("fournil ask: error:") and message in done.stderr


def test_ask_names_a_missing_a_foreign_or_a_corrupt_index(index_dir, tiny_chat_model_dir,
                                                          tmp_path):
    question = "Qui a créé le genre Deinopis ?"
    done = ask(tmp_path / "nowhere", tiny_chat_model_dir, question)
    assert done.returncode == 2 and "nowhere: no passage index here" in done.stderr
    damaged = tmp_path / "index"
    damaged.mkdir()
    for f in index_dir.rglob("*"):
        if f.is_file():
            (damaged / f.relative_to(index_dir)).parent.mkdir(parents=True, exist_ok=True)
            (damaged / f.relative_to(index_dir)).write_bytes(f.read_bytes())
    manifest = json.loads((damaged / MANIFEST).read_text())
    (damaged / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    done = ask(damaged, tiny_chat_model_dir, question)
    assert done.returncode == 2 and "index format 99" in done.stderr
    (damaged / MANIFEST).write_text(json.dumps(manifest))
    passages = damaged / "passages.parquet"
    passages.write_bytes(passages.read_bytes()[:-10] + b"\0" * 10)
    done = ask(damaged, tiny_chat_model_dir, question)
    assert done.returncode == 2 and "passages.parquet: corrupt" in done.stderr


def test_ask_with_smollm2(index_dir, smollm2_dir):
    """The real SmolLM2-135M-Instruct through transformers: whatever it writes, the reply
    is well formed, every source is a passage it was shown, and a source said verbatim is
    at its offsets."""
    question = "Où est né le rugbyman Bobby Skinstad ?"
    done = ask(index_dir, smollm2_dir, question, "--max-new-tokens", "48")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    _check_shape(reply, question)
    assert reply["model_answer"].strip()
    shown = {p["ref"]: p for p in reply["passages"]}
    for s in reply["sources"]:
        assert s["ref"] in shown and s["passage"] == shown[s["ref"]]["passage"]
        if s["verbatim"]:
            assert shown[s["ref"]]["start"] <= s["start"] < s["end"] <= shown[s["ref"]]["end"]
    assert reply["refused"] == (not reply["sources"])
