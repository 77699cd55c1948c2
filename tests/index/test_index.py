"""The index stage on the bundled corpus: real questions find their gold passage; a saved
index searches as the built one did; and an index that is missing, half-built, from another
version or damaged is an error naming it, never a search over it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fournil.core.stage import mismatches, read_manifest
from fournil.eval.ask import read_questions
from fournil.index.analyzer import ANALYZER_ID
from fournil.index.answer import MAX_QUESTION_CHARS, QuestionError, answer, check_question
from fournil.index.bm25 import BM25Retriever
from fournil.index.config import IndexConfig
from fournil.index.spans import locate
from fournil.index.stage import IndexManifest, build_index
from fournil.index.store import MANIFEST, PASSAGES, BadIndexError, open_index
from fournil.ingest.config import SourceSpec
from fournil.recipe import RecipeError

QUESTIONS = Path(__file__).resolve().parents[1] / "data" / "ask-fr.jsonl"
SOURCES = {"wikipedia-fr", "etalab/rgaa-methodologie"}


@pytest.fixture(scope="module")
def built(data_stages, tmp_path_factory):
    """(curate folder, index folder, manifest): Wikipedia and the RGAA, indexed by the stage."""
    run = tmp_path_factory.mktemp("index-run")
    layout = data_stages([SourceSpec("wikipedia-fr-sample"), SourceSpec("etalab-rgaa")], run)
    manifest = build_index(layout.curate, run / "index", IndexConfig())
    return layout.curate, run / "index", manifest


@pytest.fixture
def copy_of(built, tmp_path):
    """A copy of the built index a test may damage."""
    folder = tmp_path / "index"
    shutil.copytree(built[1], folder)
    return folder


def test_the_manifest_counts_and_conforms_to_its_type(built):
    _, folder, manifest = built
    assert read_manifest(folder) == manifest
    assert mismatches(manifest, IndexManifest) == []
    counts = manifest["counts"]
    assert counts["documents"] == 5 and counts["empty_documents"] == 0
    assert set(counts["by_source"]) == SOURCES
    assert sum(s["passages"] for s in counts["by_source"].values()) == counts["passages"]
    assert sum(counts["by_license"].values()) == counts["passages"]
    assert manifest["analyzer"] == ANALYZER_ID
    again = build_index(built[0], folder, IndexConfig())  # same inputs: skipped, same output
    assert again["output_hash"] == manifest["output_hash"]


def _gold_rank(question, retriever, k=10):
    for rank, hit in enumerate(retriever.search(question.question, k), 1):
        if question.is_gold(hit.passage):
            return rank
    return None


def test_real_questions_find_their_gold_passage(built):
    """The hand-written questions whose answer is in Wikipedia or the RGAA (accents or not,
    paraphrased or not) against the ~700 passages of those two sources: measured 17 of 19
    in the top 3, 18 in the top 10, MRR 0.74 (the 19th, "pourquoi ... en désactivant les
    CSS ?", is lost among the RGAA's many `font` and `CSS` passages; on the whole corpus,
    where these words are rarer, it ranks 2nd: bench/index_bench.py)."""
    retriever = open_index(built[1])
    docs = {p.doc_id for p in retriever.passages}
    questions = [q for q in read_questions(QUESTIONS)
                 if q.answerable and all(g.doc in docs for g in q.gold)]
    assert len(questions) == 19
    ranks = {q.id: _gold_rank(q, retriever) for q in questions}
    n = len(ranks)
    assert sum(r is not None and r <= 3 for r in ranks.values()) / n >= 0.8, ranks
    assert sum(r is not None for r in ranks.values()) / n >= 0.9, ranks
    assert sum(1 / r for r in ranks.values() if r) / n >= 0.65, ranks


def test_hits_are_distinct_texts_with_positive_scores(built):
    retriever = open_index(built[1])
    hits = retriever.search("Si c'est le cas, le test est validé", 10)
    assert len(hits) == 10
    assert len({h.passage.text for h in hits}) == 10  # the RGAA repeats this line everywhere
    assert all(h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert retriever.search("le la les de du", 5) == []  # stop words only: nothing to match
    assert retriever.search("xylophonique zzzq", 5) == []  # terms no passage has


def test_save_and_load_give_the_same_hits(built, tmp_path):
    retriever = open_index(built[1])
    rebuilt = BM25Retriever()
    rebuilt.build(retriever.passages)
    for q in ("contraste minimal du texte", "araignée à face d'ogre", "Bulawayo"):
        assert rebuilt.search(q, 5) == retriever.search(q, 5)
    from fournil.index.store import save_index
    save_index(rebuilt, tmp_path / "again")
    reloaded = open_index(tmp_path / "again")
    assert reloaded.search("araignée à face d'ogre", 5) == retriever.search(
        "araignée à face d'ogre", 5)


def test_a_missing_index_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no passage index here.*fournil index"):
        open_index(tmp_path / "index")


def test_a_half_built_index_is_never_opened(copy_of):
    # what an interrupted stage leaves: its work folder, index.json written or not
    partial = copy_of.with_name("index.partial")
    copy_of.rename(partial)
    with pytest.raises(FileNotFoundError, match=r"index\.partial is a build that is running"):
        open_index(copy_of)
    with pytest.raises(BadIndexError, match=r"index\.partial: a build's work folder .*use "
                       f"{copy_of}"):
        open_index(partial)
    (partial / MANIFEST).unlink()  # a folder without the index.json written last
    partial.rename(copy_of)
    with pytest.raises(BadIndexError, match="not a complete passage index"):
        open_index(copy_of)


def test_an_index_of_another_version_or_analyzer_is_refused(copy_of):
    manifest = json.loads((copy_of / MANIFEST).read_text())
    (copy_of / MANIFEST).write_text(json.dumps({**manifest, "format_version": 0,
                                                "fournil_version": "0.0.1"}))
    with pytest.raises(BadIndexError, match=r"index format 0 \(built by fournil 0\.0\.1\).*"
                       "reads format 1"):
        open_index(copy_of)
    (copy_of / MANIFEST).write_text(json.dumps({**manifest, "analyzer": "fr-snowball-fold/0/x"}))
    with pytest.raises(BadIndexError, match="analyzer 'fr-snowball-fold/0/x'.*would not match"):
        open_index(copy_of)
    (copy_of / MANIFEST).write_text("{ not json")
    with pytest.raises(BadIndexError, match="index.json: corrupt"):
        open_index(copy_of)


def test_a_corrupt_or_missing_file_is_named(copy_of):
    scores = next(p for p in (copy_of / "bm25s").iterdir() if p.name.startswith("data."))
    data = bytearray(scores.read_bytes())
    data[len(data) // 2: len(data) // 2 + 8] = b"\0" * 8  # bm25s would load this silently
    scores.write_bytes(bytes(data))
    with pytest.raises(BadIndexError, match=f"{scores.name}: corrupt"):
        open_index(copy_of)
    (copy_of / PASSAGES).unlink()
    with pytest.raises(BadIndexError, match=f"{PASSAGES}: missing"):
        open_index(copy_of)


def test_bad_questions_are_clear_errors(built):
    retriever = open_index(built[1])
    for empty in ("", "   \n\t"):
        with pytest.raises(QuestionError, match="empty question"):
            answer(empty, retriever, None)
    huge = "Quel est le contraste minimal ? " * 3200  # ~100 kB pasted as a question
    assert len(huge) > 100_000
    with pytest.raises(QuestionError, match=f"{len(huge.strip())} characters long, over the "
                       f"{MAX_QUESTION_CHARS}"):
        answer(huge, retriever, None)
    assert check_question("  Qui ?  ") == "Qui ?"


def test_a_question_the_corpus_knows_nothing_of_is_refused_before_any_model(built):
    retriever = open_index(built[1])
    refused = answer("Quelle est la recette de la pâte à crêpes ?", retriever, None)
    assert refused.refused and refused.reason == "nothing_relevant"
    assert refused.relevance < 0.4 and refused.model_answer is None
    kept = answer("Quel logiciel permet de contrôler l'accessibilité des documents PDF ?",
                  retriever, None)
    assert not kept.refused and kept.relevance > 0.9


def test_quotes_are_located_in_the_document(built):
    passage = next(p for p in open_index(built[1]).passages if "PAC 2 (PDF" in p.text)
    quote = "PAC 2 (PDF Accessibility Checker) pour Windows"
    start, end = locate(quote, passage.text)
    assert passage.text[start:end] == quote
    # layout whitespace in the passage or the quote does not matter; a changed word does
    text = "Il  vint\nhier de\n\nPoitiers, mais il sent peu l'école"
    start, end = locate("vint hier de Poitiers", text)
    assert text[start:end] == "vint\nhier de\n\nPoitiers"
    assert locate("vint demain de Poitiers", text) is None
    assert locate("   ", text) is None


def test_the_recipe_section_is_checked():
    with pytest.raises(RecipeError, match="index.max_chars"):
        IndexConfig(min_chars=800, max_chars=500).validate("index")
    with pytest.raises(RecipeError, match="index.backend"):
        IndexConfig(backend="elasticsearch").validate("index")


def test_bake_runs_the_stage_with_the_recipes_section(built, tmp_path):
    """What bake does for a recipe whose `stages` names "index": the stage's entry with the
    run's context, its settings from `[index]`, its output in `<run>/index`."""
    from fournil.recipe import Recipe
    from fournil.stages import BY_NAME, RunLayout, StageContext

    recipe = Recipe(name="r", stages=["ingest", "curate", "index"],
                    index=IndexConfig(min_chars=300, max_chars=600))
    recipe.index.validate("index")
    assert recipe.runs("index") and not Recipe(name="r").runs("index")  # optional stage
    (tmp_path / "curate").symlink_to(built[0])
    manifest = BY_NAME["index"].entry()(StageContext(recipe, RunLayout(tmp_path)))
    assert manifest["params"]["max_chars"] == 600
    assert manifest["counts"]["passages"] > built[2]["counts"]["passages"]  # shorter ones
    assert max(len(p.text) for p in open_index(tmp_path / "index").passages) <= 600 + 100
