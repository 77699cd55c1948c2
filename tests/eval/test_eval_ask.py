"""The `ask` evaluation: retrieval and answer scores checked by hand on hand-written answers,
the question file's checks, and the task through `fournil eval` on a real index."""

from __future__ import annotations

import json
import math

import pytest

from fournil.eval.ask import (
    Gold,
    Question,
    answer_scores,
    questions_from_samples,
    read_questions,
    retrieval_scores,
    score_answer,
)
from fournil.index.answer import Answer, cited_sources
from fournil.index.passages import Passage
from fournil.index.retriever import Hit


def _passage(i: int, text: str, doc: str = "src/doc", start: int = 0) -> Passage:
    return Passage(f"{doc}#{i}", doc, start, start + len(text), text, "Titre", None, None,
                   "src", "LicenseRef-PublicDomain", None)


GOLD = _passage(0, "Il vint hier de Poitiers, mais il sent peu l'école.", start=100)
OTHER = _passage(1, "Le brick La Jeune-Hardie quitta le port.", doc="src/other")
QUESTION = Question("q1", "D'où vient Dorante ?", (Gold("src/doc", "vint hier de Poitiers"),),
                    "De Poitiers.", ("Poitiers",))


def _answered(text: str, hits=(GOLD, OTHER), refused: bool = False) -> Answer:
    shown = {str(i + 1): p for i, p in enumerate(hits)}
    return Answer(QUESTION.question, text, refused, sources=cited_sources(text, shown),
                  hits=[Hit(p, 1.0) for p in hits], relevance=1.0, model_answer=text)


def test_retrieval_scores_by_hand():
    scores = retrieval_scores([1, 2, None, 4])
    assert scores == {"recall@1": 0.25, "recall@3": 0.5, "recall@5": 0.75, "recall@10": 0.75,
                      "mrr": (1 + 1 / 2 + 1 / 4) / 4}


def test_a_right_cited_verbatim_answer():
    text = 'Il arrive de Poitiers : <ref name="1">Il vint hier de Poitiers</ref>.'
    s = score_answer(QUESTION, _answered(text))
    assert (s["gold_shown"], s["cited"], s["quotes"], s["verbatim"], s["correct"]) == (
        ["1"], ["1"], 1, 1, True)
    [source] = _answered(text).sources
    assert source.span == (100, 100 + len("Il vint hier de Poitiers"))  # in the document


def test_wrong_source_paraphrase_and_unclosed_ref_count_against():
    text = ('<ref name="2">Le brick La Jeune-Hardie</ref> et <ref name="1">il vient de '
            'Poitiers</ref> puis <ref name="1">il sent')
    s = score_answer(QUESTION, _answered(text))
    # two closed quotes (one verbatim, one paraphrase) and one left open: 1 of 3 verbatim
    assert (s["quotes"], s["verbatim"], s["cited"]) == (3, 1, ["2", "1"])
    scores = answer_scores([s])
    assert scores["citation_precision"] == 0.5 and scores["citation_recall"] == 1.0
    assert scores["verbatim"] == pytest.approx(1 / 3)
    assert scores["correct"] == 1.0  # the key word is there, whatever the quotes


def test_refusals_on_answerable_and_unanswerable_questions():
    unanswerable = Question("q2", "Quelle est la capitale de l'Australie ?", ())
    refused = Answer(unanswerable.question, "…", True, "nothing_relevant", relevance=0.2)
    model_refused = Answer(QUESTION.question, "…", True, "sources_do_not_answer",
                           hits=[Hit(GOLD, 1.0)], model_answer="Je ne sais pas.")
    rows = [score_answer(unanswerable, refused), score_answer(QUESTION, model_refused),
            score_answer(QUESTION, _answered('Oui : <ref name="1">Il vint hier de '
                                             'Poitiers</ref>'))]
    scores = answer_scores(rows)
    assert scores["refusal"] == 1.0 and scores["refusal_retrieval"] == 1.0
    assert scores["false_refusal"] == 0.5
    assert scores["correct"] == 0.5  # a refused answerable question is not a right answer
    assert scores["citation_recall"] == 0.5  # gold shown twice, cited once
    assert math.isclose(scores["verbatim"], 1.0)


def test_question_file_errors_name_the_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "a", "question": "Qui ?", "gold": []}\n{"id": "b", "gold": []}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2: expected a JSON object with id, question"):
        read_questions(path)
    path.write_text('{"id": "a", "question": "Qui ?", "gold": []}\n' * 2)
    with pytest.raises(ValueError, match=r"q.jsonl:2: id 'a' is given twice"):
        read_questions(path)


def test_the_bundled_question_set():
    """At least 40 hand-written questions, about a fifth unanswerable, over the three
    bundled sources, each answerable one with its key words and a gold text."""
    from pathlib import Path
    questions = read_questions(Path(__file__).resolve().parents[1] / "data" / "ask-fr.jsonl")
    answerable = [q for q in questions if q.answerable]
    assert len(questions) >= 40 and 0.15 <= 1 - len(answerable) / len(questions) <= 0.25
    assert all(q.keywords and q.answer for q in answerable)
    sources = {g.doc.split("/")[0] for q in answerable for g in q.gold}
    assert sources == {"cligs-textbox", "wikipedia-fr", "etalab"}


def test_synth_samples_become_questions():
    seed = "Il vint hier de Poitiers, mais il sent peu l'école. Bon."
    rows = [{"id": "s1", "meta": {"query": "D'où vient-il ?", "outcome": "answerable",
                                  "gold": ["2"], "gold_passage": "src/doc#3",
                                  "sources": [["1", "autre"], ["2", seed]]}},
            {"id": "s2", "meta": {"query": "Et lui ?", "outcome": "unanswerable", "gold": [],
                                  "gold_passage": "src/doc#4", "sources": [["1", "autre"]]}}]
    [q] = questions_from_samples(rows)
    assert q.id == "s1" and q.gold == (Gold("src/doc", "Il vint hier de Poitiers, mais il sent "
                                                       "peu l'école."),)
    assert q.is_gold(GOLD) and not q.is_gold(OTHER)


def test_the_ask_task_through_fournil_eval(tmp_path, data_stages, tiny_chat_model_dir):
    """`fournil eval --task ask:FILE` on a run with an index: the table has the task's
    columns and results.json its scores; prompts too long for the tiny model are rejected
    with a reason, not a crash."""
    import subprocess
    import sys

    from fournil.index.config import IndexConfig
    from fournil.index.stage import build_index
    from fournil.ingest.config import SourceSpec

    layout = data_stages([SourceSpec("wikipedia-fr-sample")], tmp_path / "run")
    build_index(layout.curate, tmp_path / "run" / "index", IndexConfig(100, 200))
    questions = tmp_path / "few.jsonl"
    questions.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in [
        {"id": "a", "question": "Dans quelle ville l'acteur Tom McGowan est-il né ?",
         "answer": "Belmar", "keywords": ["Belmar"],
         "gold": [{"doc": "wikipedia-fr/1165523", "contains": "né le à Belmar"}]},
        {"id": "b", "question": "Quelle est la recette de la pâte à crêpes ?", "gold": []},
    ]) + "\n")
    done = subprocess.run([sys.executable, "-m", "fournil", "-q", "eval", "--run-dir",
                           str(tmp_path / "run"), "--model", f"tiny={tiny_chat_model_dir}",
                           "--task", f"ask:{questions}", "--report", str(tmp_path / "report"),
                           "--set", "eval.max_new_tokens=8"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ask:few R@3" in done.stdout and "ask:few refusal" in done.stdout
    [result] = json.loads((tmp_path / "report" / "results.json").read_text())
    scores = result["tasks"]["ask:few"]
    assert scores["recall@1"] == 1.0 and scores["answerable"] == 1
    assert scores["refusal"] == 1.0 and scores["refusal_retrieval"] == 1.0
    assert scores["refusal_constrained"] == 1.0  # the same refusal, quotes constrained
    rows = [json.loads(line) for line in
            (tmp_path / "report" / "items" / "tiny" / "ask_few.jsonl").read_text().splitlines()]
    # each question answered in both modes, or rejected once with its reason
    assert [(r["id"], r.get("constrained"), r.get("reason")) for r in rows] == [
        ("b", False, "nothing_relevant"), ("b", False, "nothing_relevant"),
        ("a", None, "ask:prompt_too_long")]

    # every answer is in the journal as it comes, and a pass run again takes it from there
    [journal] = (tmp_path / "report" / "journal" / "tiny").glob("ask-few-*.jsonl")
    lines = journal.read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["id"] for line in lines[1:]) == [
        "constrained/a", "constrained/b", "free/a", "free/b"]
    marked = [json.loads(line) for line in lines[1:]]
    for row in marked:
        if row["id"] == "free/b":
            row["scored"]["refused"] = False  # not what the model would say: read, not redone
    journal.write_text("\n".join([lines[0], *(json.dumps(r, ensure_ascii=False)
                                               for r in marked)]) + "\n", encoding="utf-8")
    again = subprocess.run(done.args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    [result] = json.loads((tmp_path / "report" / "results.json").read_text())
    assert result["tasks"]["ask:few"]["refusal"] == 0.0
    assert result["tasks"]["ask:few"]["refusal_constrained"] == 1.0


def test_quoting_lm_decodes_as_the_models_own_chat(tiny_chat_model_dir):
    """QuotingLM's greedy loop (the one constrained answers go through) writes what the
    model's own greedy chat writes: the same prefill, then one cached step per token, so the
    same kernels and the same argmax. With a constraint over two sources it still answers
    (outside a <ref> nothing is constrained, and this random model opens none)."""
    from fournil.eval.ask import QuotingLM
    from fournil.eval.lm import load_lm
    from fournil.formats.prompts import rag_messages

    lm = load_lm(tiny_chat_model_dir)
    quoting = QuotingLM(lm)
    sources = [("1", "Il vint hier de Poitiers."), ("2", "Le brick La Jeune-Hardie.")]
    messages = rag_messages("D'où vient Dorante ?", sources)
    assert quoting.chat(messages, 24) == lm.chat(messages, 24)
    constraint = quoting.quote_constraint(dict(sources))
    assert isinstance(quoting.chat(messages, 24, constraint=constraint), str)


def test_an_answer_prefix_opens_a_verbatim_quote(tiny_chat_model_dir):
    """With '<ref name="' as the prefix (fournil ask --answer-prefix), the answer starts with
    it and, constrained, whatever this random model writes next is a verbatim quote of a
    source (or its closing): the quote constraint saw the prefix."""
    from fournil.eval.ask import QuotingLM
    from fournil.eval.lm import load_lm
    from fournil.formats.citations import parse_citations
    from fournil.formats.prompts import rag_messages

    lm = load_lm(tiny_chat_model_dir)
    quoting = QuotingLM(lm, prefix='<ref name="')
    sources = [("1", "Il vint hier de Poitiers."), ("2", "Le brick La Jeune-Hardie.")]
    answer = quoting.chat(rag_messages("D'où vient Dorante ?", sources), 24,
                          constraint=quoting.quote_constraint(dict(sources)))
    assert answer.startswith('<ref name="')
    citations = parse_citations(answer)
    assert citations, answer
    texts = dict(sources)
    for citation in citations:
        assert citation.quote in texts[citation.source_id], answer


def test_every_engine_reads_the_same_token_bytes_and_quotes_verbatim(llama_cpp,
                                                                      smollm2_gguf_path,
                                                                      smollm2_dir):
    """Constrained quotes walk the model's tokens as bytes: llama.cpp's pieces of SmolLM2's
    GGUF are the bytes fournil's and transformers' engines read from its tokenizer, token for
    token, and a constrained answer through llama.cpp quotes its source verbatim."""
    from fournil.eval.ask import QuotingLM
    from fournil.eval.gguf_lm import LlamaCppLM
    from fournil.eval.lm import load_lm
    from fournil.formats.citations import is_verbatim, parse_citations
    from fournil.formats.prompts import rag_messages

    gguf = LlamaCppLM(smollm2_gguf_path, n_ctx=2048, threads=1)
    expected = load_lm(smollm2_dir).token_bytes()
    assert gguf.token_bytes() == expected == load_lm(f"hf:{smollm2_dir}").token_bytes()
    assert sum(b is None for b in expected) < 100 < len(expected)  # specials only

    quoting = QuotingLM(gguf, prefix='<ref name="')
    sources = [("1", "Le vicomte de Brassard était un homme que tout Paris connaissait."),
               ("2", "La diligence passait chaque soir devant le château de Rueil.")]
    answer = quoting.chat(rag_messages("Qui était le vicomte de Brassard ?", sources), 48,
                          constraint=quoting.quote_constraint(dict(sources)))
    citations = parse_citations(answer)
    assert citations, answer
    assert all(is_verbatim(c.quote, dict(sources)[c.source_id]) for c in citations), answer
