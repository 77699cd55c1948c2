"""`fournil correct`: pieces cut and put back losslessly; the stage on real curated documents
(some damaged by the OCR noise model, so that curate flags them) with a real model: every
record read is written, the flagged ones with their original's sha256 and the model, the
others as they were; a stopped run resumes without redoing its chunks and ends where an
uninterrupted one does; and (slow) a trained corrector fixes the errors it knows."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rapidfuzz.distance import Levenshtein

from fournil.core.shards import iter_records
from fournil.core.stage import mismatches, read_manifest
from fournil.core.validation import RecipeError
from fournil.correct import pieces
from fournil.correct.config import CorrectConfig
from fournil.correct.stage import PAGE_CHARS, CorrectManifest, run, run_correct
from fournil.curate.config import CurateConfig
from fournil.eval.corrector import DEFAULT, small_changes_only
from fournil.eval.lm import ModelSpec
from fournil.ingest.config import SourceSpec
from fournil.recipe import Recipe, recipe_from_dict
from fournil.stages import RunLayout, StageContext
from fournil.text.ocr_damage import add_ocr_noise

DATA = Path(__file__).resolve().parents[2] / "data"
NOUVELLES = DATA / "cligs-textbox-fr" / "nouvelles19"


# --- pieces ----------------------------------------------------------------------------------

def test_pieces_put_back_unchanged_give_the_text_back():
    text = (NOUVELLES / "nd0003.txt").read_text(encoding="utf-8")[:6000]
    for max_chars in (50, 400):
        spans = pieces.split(text, max_chars)
        assert all(0 < b - a <= max_chars for a, b in spans)
        assert pieces.join(text, spans, [text[a:b] for a, b in spans]) == text
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert text[end:start].isspace()  # only whitespace is left between pieces
        for a, b in spans:
            assert not text[a].isspace() and not text[b - 1].isspace()


def test_pieces_prefer_line_breaks_and_cut_what_has_no_space():
    text = "une ligne assez longue\nsuite de la page ici"
    assert [text[a:b] for a, b in pieces.split(text, 30)] == [
        "une ligne assez longue", "suite de la page ici"]
    word = "  x" + "a" * 25 + " fin "
    assert [word[a:b] for a, b in pieces.split(word, 10)] == [
        "xaaaaaaaaa", "aaaaaaaaaa", "aaaaaa fin"]
    assert pieces.split("   \n ", 10) == []
    spans = pieces.split("Le cbat  dort.\n\nFin", 9)
    assert pieces.join("Le cbat  dort.\n\nFin", spans, ["Le chat", "dort.", "Fin"]) == (
        "Le chat  dort.\n\nFin")


# --- the stage -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def curated(data_stages, tmp_path_factory) -> Path:
    """Five real documents (short-story slices of 600 characters), three of them damaged by
    the OCR noise model at its heaviest: curate flags those three."""
    tmp = tmp_path_factory.mktemp("correct-corpus")
    records = []
    for k, name in enumerate(("nd0004", "nd0027", "nd0020", "nd0035", "nd0037")):
        text = (NOUVELLES / f"{name}.txt").read_text(encoding="utf-8")[8000:8600]
        if k < 3:
            text = add_ocr_noise(text, "heavy", seed=k, layout="lines").text
        records.append({"id": name, "text": text})
    (tmp / "docs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                            for r in records), encoding="utf-8")
    source = SourceSpec(path="docs.jsonl", name="novels", license="domaine public")
    curate = data_stages([source], tmp, base=tmp, curate=CurateConfig(workers=1)).curate
    flags = {r["id"]: r["ocr_flag"] for r in iter_records(curate / "documents")}
    assert flags == {"novels/nd0004": True, "novels/nd0027": True, "novels/nd0020": True,
                     "novels/nd0035": False, "novels/nd0037": False}, flags
    return curate


def _config(**overrides) -> CorrectConfig:
    # small pieces and chunks, so that three documents make several of each; short answers,
    # as a random model's run to their budget
    return dataclasses.replace(CorrectConfig(piece_chars=200, chunk_chars=600,
                                             max_new_tokens=16), **overrides)


def test_every_record_is_written_the_corrected_ones_with_their_provenance(
        curated, tiny_chat_model_dir, tmp_path):
    manifest = run_correct(curated, tmp_path / "correct", ModelSpec.parse(
        str(tiny_chat_model_dir)), _config())
    before = {r["id"]: r for r in iter_records(curated / "documents")}
    after = list(iter_records(tmp_path / "correct" / "documents"))
    assert [r["id"] for r in after] == list(before)  # all of them, in input order
    counts = manifest["counts"]
    assert counts["read"] == counts["written"] == 5 and counts["flagged"] == 3
    for row in after:
        original = before[row["id"]]
        if not original["ocr_flag"]:  # passed through, untouched
            assert row == {**original, "ocr_original_sha256": None, "ocr_corrected_by": None}
            continue
        assert row["ocr_original_sha256"] == hashlib.sha256(
            original["text"].encode()).hexdigest()
        assert row["ocr_corrected_by"] == manifest["corrected_by"]
        assert manifest["corrected_by"].startswith("tiny-fournil sha256:")
        assert row["n_chars"] == len(row["text"])
        assert {k: v for k, v in row.items() if k not in (
            "text", "n_chars", "ocr_original_sha256", "ocr_corrected_by")} == {
            k: v for k, v in original.items() if k not in ("text", "n_chars")}
    flagged_chars = sum(len(r["text"]) for r in before.values() if r["ocr_flag"])
    assert counts["flagged_chars"] == flagged_chars
    assert counts["pages"] == round(flagged_chars / PAGE_CHARS, 2)
    assert counts["pieces"] == sum(len(pieces.split(r["text"], 200))
                                   for r in before.values() if r["ocr_flag"])
    assert counts["pieces_too_long"] == 0 and counts["pages_per_hour"] > 0
    assert manifest["model"]["path"] == str(tiny_chat_model_dir)
    assert manifest["model"]["engine"] == "fournil"
    assert mismatches(manifest, CorrectManifest) == []
    # a copy bias past any logit gap changes nothing, and says so
    copy = run_correct(curated, tmp_path / "copy", ModelSpec.parse(str(tiny_chat_model_dir)),
                       _config(margin=math.inf))
    assert copy["counts"]["changed"] == copy["counts"]["pieces_changed"] == 0
    texts = {r["id"]: r["text"] for r in iter_records(tmp_path / "copy" / "documents")}
    assert texts == {i: r["text"] for i, r in before.items()}


def test_a_stopped_run_resumes_without_redoing_its_chunks(curated, tiny_chat_model_dir,
                                                          tmp_path, caplog):
    spec, out = ModelSpec.parse(str(tiny_chat_model_dir)), tmp_path / "correct"
    assert run_correct(curated, out, spec, _config(), stop_after=1) is None
    done = list((tmp_path / "correct.partial" / "chunks").glob("chunk-*.parquet"))
    assert len(done) == 1 and not out.exists()  # nothing looks finished
    with caplog.at_level(logging.INFO, logger="fournil"):
        manifest = run_correct(curated, out, spec, _config())
    planned = [r.args for r in caplog.records if r.msg.startswith("correct: %d chunks")]
    assert planned and planned[0][1] == planned[0][0] - 1  # all but the chunk made before
    assert manifest is not None and not (tmp_path / "correct.partial").exists()
    uninterrupted = run_correct(curated, tmp_path / "again", spec, _config())
    assert (list(iter_records(out / "documents"))
            == list(iter_records(tmp_path / "again" / "documents")))
    for key in ("read", "written", "flagged", "changed", "pieces", "pieces_changed"):
        assert manifest["counts"][key] == uninterrupted["counts"][key]
    assert run_correct(curated, out, spec, _config()) == manifest  # done: skipped


def test_bad_inputs_are_named(curated, tiny_chat_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder or GGUF file"):
        run_correct(curated, tmp_path / "c", ModelSpec.parse(str(tmp_path / "none")),
                    _config())
    documents = tmp_path / "plain" / "documents"
    documents.mkdir(parents=True)
    table = pq.read_table(next((curated / "documents").glob("*.parquet")))
    pq.write_table(table.drop_columns(["ocr_flag"]), documents / "part-00000.parquet")
    with pytest.raises(RecipeError, match="no ocr_flag column"):
        run_correct(tmp_path / "plain", tmp_path / "c", ModelSpec.parse(
            str(tiny_chat_model_dir)), _config())
    with pytest.raises(RecipeError, match="correct.margin"):
        CorrectConfig(margin=-1.0).validate("correct")


def test_the_verb_names_the_model_from_where_it_runs_a_recipe_from_where_it_is(
        curated, tiny_chat_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_chat_model_dir.parent)
    layout = RunLayout(tmp_path / "run")
    fast = {"margin": math.inf, "piece_chars": 200, "max_new_tokens": 16}  # a copy: quick
    verb = StageContext(Recipe(name="r", correct=_config(**fast)), layout,
                        {"model": tiny_chat_model_dir.name, "input": str(curated)})
    # the manifest says where the model was, wherever the command ran
    assert run(verb)["model"]["path"] == str(tiny_chat_model_dir)
    recipe = recipe_from_dict({"name": "r", "stages": ["correct"], "correct": {
        "model": f"../{tiny_chat_model_dir.name}", **fast}, "ingest": {"sources": [
            {"path": "unread"}]}},
        path=tiny_chat_model_dir.parent / "recipes" / "r.toml")
    monkeypatch.chdir(tmp_path)
    baked = StageContext(recipe, layout, {"input": str(curated), "out": str(tmp_path / "b")})
    assert run(baked)["model"]["path"] == str(tiny_chat_model_dir)
    with pytest.raises(RecipeError, match="correct.model: no correction model"):
        run(StageContext(Recipe(name="r"), layout, {"input": str(curated)}))
    with pytest.raises(RecipeError, match="correct.model: the recipe runs the correct stage"):
        recipe_from_dict({"name": "r", "stages": ["correct"], "ingest": {"sources": [
            {"path": "unread"}]}}, path=tmp_path / "r.toml")


def test_the_word_rule_reaches_the_stage(curated, tiny_chat_model_dir, tmp_path):
    """`[correct] word_edit`: a random model's greedy answers (a rewrite each) are put back
    wherever a stretch of words changed by more than `word_edit` characters."""
    spec = ModelSpec.parse(str(tiny_chat_model_dir))
    before = {r["id"]: r["text"] for r in iter_records(curated / "documents")}
    texts = {}
    for name, word_edit in (("free", 0), ("ruled", 1)):
        run_correct(curated, tmp_path / name, spec,
                    _config(margin=0.0, max_change=0.0, word_edit=word_edit))
        texts[name] = {r["id"]: r["text"] for r in iter_records(tmp_path / name / "documents")}
    rewritten = [i for i in before if texts["free"][i] != before[i]]
    assert len(rewritten) == 3  # the flagged documents, rewritten by the random model
    for i in rewritten:
        ruled = texts["ruled"][i]
        assert small_changes_only(ruled, before[i], 1) == ruled  # no stretch changed by > 1
        assert Levenshtein.distance(ruled, before[i]) < Levenshtein.distance(
            texts["free"][i], before[i]) / 10


def test_the_defaults_are_the_measured_ones():
    config = CorrectConfig()
    assert (config.margin, config.span, config.max_change, config.word_edit or None) == (
        DEFAULT.margin, DEFAULT.span, DEFAULT.max_change, DEFAULT.word_edit)


def test_the_stages_after_it_read_its_documents_when_the_recipe_runs_it(tmp_path):
    layout = RunLayout(tmp_path)
    assert StageContext(Recipe(name="r"), layout).documents() == layout.curate
    assert StageContext(Recipe(name="r", stages=["correct"]), layout).documents() == (
        layout.correct)
    given = StageContext(Recipe(name="r", stages=["correct"]), layout, {"input": "x"})
    assert given.documents() == Path("x")


# --- a corrector that knows what it corrects (slow: it is trained first) --------------------

@pytest.mark.parametrize("engine", ["fournil", "llama.cpp"])
def test_a_trained_corrector_fixes_the_errors_it_knows(engine, data_stages, tiny_corrector_dir,
                                                       tmp_path, request):
    """The same corrector as fournil's Transformer and as an f32 GGUF in llama.cpp."""
    from conftest import FRENCH, plant_ocr_errors

    model = tiny_corrector_dir
    if engine == "llama.cpp":
        from fournil.export.gguf import export_gguf

        request.getfixturevalue("llama_cpp")  # skips without llama-cpp-python
        model = export_gguf(tiny_corrector_dir, tmp_path / "tiny-corrector.gguf", "f32")

    sentences = sorted(set(FRENCH))
    clean = "\n".join(sentences)
    records = [{"id": "damaged", "text": plant_ocr_errors(clean)},
               {"id": "story", "text": (NOUVELLES / "nd0003.txt").read_text(
                   encoding="utf-8")[8000:9000]}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                 for r in records), encoding="utf-8")
    source = SourceSpec(path="docs.jsonl", name="mixed", license="domaine public")
    # the planted errors are few: flag from a low noise score, which the story stays under
    curate = CurateConfig(workers=1)
    curate.quality.ocr_flag_threshold = 0.05
    layout = data_stages([source], tmp_path, base=tmp_path, curate=curate)
    flags = {r["id"]: r["ocr_flag"] for r in iter_records(layout.curate / "documents")}
    assert flags == {"mixed/damaged": True, "mixed/story": False}, flags
    manifest = run_correct(layout.curate, tmp_path / "correct",
                           ModelSpec.parse(str(model)),
                           _config(piece_chars=80, max_new_tokens=512))
    assert manifest["model"]["engine"] == engine
    texts = {r["id"]: r["text"] for r in iter_records(tmp_path / "correct" / "documents")}
    assert texts["mixed/damaged"] == clean  # each line a piece, each error fixed
    assert manifest["counts"]["changed"] == 1
    assert read_manifest(tmp_path / "correct")["counts"]["pieces_changed"] == len(sentences)
