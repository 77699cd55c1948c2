"""The decontam stage on the bundled Wikipedia sample: a sentence of one article, retyped in an
evaluation file, is found in that article and nowhere else; a clean evaluation set finds
nothing; `fail` stops the run naming the document, `report` records it; synthetic training
samples are checked, held-out ones are not."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fournil.core.shards import iter_records
from fournil.core.stage import mismatches, read_manifest
from fournil.decontam.config import DecontamConfig
from fournil.decontam.stage import DecontamManifest, run_decontam, window_hashes, words
from fournil.ingest.config import SourceSpec
from fournil.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[2]
# written for this test: no sentence of it is in the bundled corpus
CLEAN = ("Le boulanger du village allume son four avant l'aube, pétrit la pâte de seigle et "
         "attend que la croûte chante en refroidissant sur les grilles de la fenêtre.")


@pytest.fixture(scope="module")
def curated(data_stages, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("decontam-run")
    return data_stages([SourceSpec("wikipedia-fr-sample")], run).curate


@pytest.fixture(scope="module")
def article(curated) -> dict:
    """The longest curated article, and 20 of its words from the middle, retyped: upper case,
    punctuation moved, as a test set would quote it."""
    doc = max(iter_records(curated / "documents", ["id", "source", "text"]),
              key=lambda d: len(d["text"]))
    quoted = doc["text"].split()[200:220]
    return {**doc, "quote": " ".join(quoted).upper().replace(",", " ,") + " !"}


def test_words_read_the_same_however_typeset():
    assert words("L'Été, dit-il : « 1874 » !") == words("l'été dit-il 1874") == [
        "lété", "ditil", "1874"]
    # an ICDAR aligned gold line: '@' pads the alignment and is not a character of the text
    assert words("[ GS_aligned] la fo@rêt") == words("GS_aligned la forêt")


def test_window_hashes_equal_exactly_when_the_words_are_equal():
    novellas = sorted((ROOT / "data" / "cligs-textbox-fr" / "nouvelles19").glob("*.txt"))[:3]
    text_words = [w for path in novellas for w in words(path.read_text(encoding="utf-8"))]
    n = 13
    hashes = window_hashes(text_words, n)
    windows = [tuple(text_words[i:i + n]) for i in range(len(text_words) - n + 1)]
    assert hashes.size == len(windows) > 10_000
    distinct = {}
    for h, w in zip(hashes.tolist(), windows, strict=True):
        assert distinct.setdefault(h, w) == w  # no two distinct windows share a hash
    assert len(distinct) == len(set(windows))
    assert window_hashes(text_words[:n - 1], n).size == 0


def test_a_retyped_quotation_is_found_in_its_article_only(curated, article, tmp_path):
    against = tmp_path / "eval.jsonl"
    against.write_text(json.dumps({"question": "Qui ?", "context": article["quote"]}) + "\n"
                       + json.dumps({"question": CLEAN}) + "\n")
    manifest = run_decontam(curated, None, [against], tmp_path / "decontam",
                            DecontamConfig(on_overlap="report"))
    assert mismatches(manifest, DecontamManifest) == []
    counts = manifest["counts"]
    assert counts["overlapping_documents"] == 1 and counts["samples"] == 0
    assert counts["documents"] == sum(1 for _ in iter_records(curated / "documents", ["id"]))
    # a window of 13 words starts at each of the first len - 12 words; "Qui ?" is too short
    quote_windows = len(words(article["quote"])) - 12
    assert counts["against_windows"] == quote_windows + len(words(CLEAN)) - 12
    assert counts["too_short"] == 1
    [overlap] = [json.loads(line) for line in
                 (tmp_path / "decontam" / "overlaps.jsonl").read_text().splitlines()]
    assert overlap["id"] == article["id"] and overlap["windows"] == quote_windows
    assert overlap["words"] == " ".join(words(article["quote"])[:13])
    assert read_manifest(tmp_path / "decontam")["against"] == [str(against)]


def test_fail_stops_naming_the_document_and_leaves_no_output(curated, article, tmp_path):
    against = tmp_path / "eval"
    against.mkdir()
    (against / "page.txt").write_text(f"{CLEAN}\n{article['quote']}\n")
    (against / "notes.csv").write_text("not read: not an evaluation text format\n")
    with pytest.raises(ValueError, match=f"{article['id']}.*page.txt"):
        run_decontam(curated, None, [against], tmp_path / "out", DecontamConfig())
    assert not (tmp_path / "out").exists()  # nothing downstream can take it as done
    (against / "page.txt").write_text(CLEAN)
    manifest = run_decontam(curated, None, [against], tmp_path / "out", DecontamConfig())
    assert manifest["counts"]["overlapping_documents"] == 0
    assert manifest["against"] == [str(against / "page.txt")]


def test_synthetic_training_samples_are_checked_held_out_ones_not(curated, article, tmp_path):
    samples = tmp_path / "synth" / "samples"
    samples.mkdir(parents=True)
    chat = [{"role": "user", "content": "Corrige :"},
            {"role": "assistant", "content": article["quote"].lower()}]
    pq.write_table(pa.Table.from_pylist([
        {"id": "s-train", "source": "synth/ocr", "messages": chat, "split": "train"},
        {"id": "s-eval", "source": "synth/ocr", "messages": chat, "split": "eval"}]),
        samples / "ocr-train-00000.parquet")
    (tmp_path / "synth" / "manifest.json").write_text('{"output_hash": "hand-built"}')
    against = tmp_path / "eval.txt"
    against.write_text(article["quote"])
    manifest = run_decontam(curated, tmp_path / "synth", [against], tmp_path / "out",
                            DecontamConfig(on_overlap="report"))
    assert manifest["counts"]["samples"] == 1
    assert manifest["counts"]["overlapping_samples"] == 1
    ids = [json.loads(line)["id"] for line in
           (tmp_path / "out" / "overlaps.jsonl").read_text().splitlines()]
    assert ids == [article["id"], "s-train"]


def test_bad_evaluation_files_are_named(curated, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "un"}\n{"q": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        run_decontam(curated, None, [bad], tmp_path / "out", DecontamConfig())
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        run_decontam(curated, None, [tmp_path / "missing.txt"], tmp_path / "out",
                     DecontamConfig())
    with pytest.raises(ValueError, match="no evaluation files"):
        run_decontam(curated, None, [], tmp_path / "out", DecontamConfig())


def test_the_verb_exits_2_with_the_overlap(curated, article, tmp_path):
    against = tmp_path / "eval.md"
    against.write_text(f"# Extrait\n\n{article['quote']}\n")
    done = subprocess.run(
        [sys.executable, "-m", "fournil", "decontam", "--input", str(curated),  # tiny-cpu
         "--out", str(tmp_path / "out"), "--against", str(against)],
        cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert article["id"] in done.stderr and "overlaps.jsonl" in done.stderr


def test_windows_are_consecutive_words():
    text_words = "a b c d e f g".split()
    hashes = window_hashes(text_words, 3).tolist()
    assert [window_hashes(text_words[i:i + 3], 3).tolist() for i in range(5)] == [
        [h] for h in hashes]
    assert all(a != b for a, b in pairwise(hashes))


def test_a_bad_setting_fails_when_the_recipe_loads(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'extends = "{ROOT / "recipes" / "smoke.toml"}"\n\n'
                      '[decontam]\nagainst = ["eval.jsonl"]\nngram = 3\n')
    with pytest.raises(RecipeError, match=r"decontam.ngram: must be between 5 and 64, got 3"):
        load_recipe(recipe)
    recipe.write_text(recipe.read_text().replace("ngram = 3", 'on_overlap = "ignore"'))
    with pytest.raises(RecipeError, match=r"decontam.on_overlap: must be one of fail, report"):
        load_recipe(recipe)


@pytest.mark.slow
def test_bake_stops_before_training_on_an_overlap(tmp_path):
    """The smoke recipe with decontam against the hand-written questions, whose gold answer of
    one question quotes a novella of the corpus: bake stops after synth, before the tokenizer,
    and says which document."""
    (tmp_path / "data").symlink_to(ROOT / "data")  # the smoke recipe's sources, ../data/...
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "r.toml"
    recipe.write_text(
        f'extends = "{ROOT / "recipes" / "smoke.toml"}"\n'
        'stages = ["ingest", "curate", "synth", "decontam", "tokenizer", "tokens", "pretrain",'
        ' "eval", "sft", "export"]\n\n'
        f'[decontam]\nagainst = ["{ROOT / "tests" / "data" / "ask-fr.jsonl"}"]\n')
    done = subprocess.run([sys.executable, "-m", "fournil", "bake", str(recipe), "--run-dir",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "cligs-textbox/nouvelles19/nd0126" in done.stderr and "ask-fr.jsonl" in done.stderr
    assert (tmp_path / "run" / "synth" / "manifest.json").exists()
    assert not (tmp_path / "run" / "decontam").exists()
    assert not (tmp_path / "run" / "tokenizer").exists()
