"""Asking the index (`fournil ask`), scored: does retrieval find the passage that holds the
answer, and does the model answer from it, quoting verbatim, citing the right passage,
answering right, and refusing when the corpus does not hold the answer?

Items are questions with their gold passages, each given as a document id and a verbatim
piece of the passage (so the gold survives a re-cut of the passages): the hand-written
French questions (`tests/data/ask-fr.jsonl`, JSONL: id, question, answer, keywords, gold
[{doc, contains}], kind) or the synth stage's cited-RAG eval samples (their query, and the
sentences of their seed passage in its document; answerable ones only: an "unanswerable"
synth sample lacks its seed among *its* sources, while the index holds the whole corpus).

Scores:
- retrieval, over the answerable questions: `recall@1/3/5/10` (a gold passage among the
  first k hits) and `mrr` (mean of 1/rank of the first gold passage, 0 past 10);
- answers, from `fournil.index.answer.answer` (the same path as `fournil ask`):
  `citation_precision` (cited passages that are gold, over answerable answers that cite),
  `citation_recall` (answers citing a gold passage, over answerable questions whose gold
  passage was shown), `verbatim` (quotes verbatim in the passage they cite, over all quotes,
  a ref left open counting as one that is not), `correct` (answerable questions answered
  without refusal, every key word of the gold answer in the answer, accents and case aside),
  `false_refusal` (answerable questions refused), `refusal` (unanswerable questions
  refused) and `refusal_retrieval` (of those, refused before the model was asked);
  each twice: quotes free, then constrained to be verbatim (`QuotingLM`; the scores end in
  `_constrained`), so the constraint's effect is read in one table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fournil.eval.journal import Journal
from fournil.eval.language_model import LanguageModel, PromptTooLong
from fournil.formats.citations import REF, is_verbatim, parse_citations, squash
from fournil.formats.quote_constraint import QuoteConstraint
from fournil.formats.token_trie import TokenTrie
from fournil.index.analyzer import fold
from fournil.index.answer import NOTHING_RELEVANT, ChatModel, answer
from fournil.index.passages import Passage
from fournil.index.retriever import Retriever
from fournil.model.generate import constrain
from fournil.synth.extract import sentences

RANKS = (1, 3, 5, 10)


@dataclass(frozen=True)
class Gold:
    doc: str  # document id
    contains: str  # verbatim (whitespace aside) in the gold passage

    def matches(self, passage: Passage) -> bool:
        return passage.doc_id == self.doc and squash(self.contains) in squash(passage.text)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    gold: tuple[Gold, ...]  # none: the corpus does not hold the answer
    answer: str | None = None
    keywords: tuple[str, ...] = ()  # in a right answer (accents and case aside)
    kind: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.gold)

    def is_gold(self, passage: Passage) -> bool:
        return any(g.matches(passage) for g in self.gold)


def read_questions(path: str | Path) -> list[Question]:
    """Questions from a JSONL file; a malformed line is an error naming the file and line."""
    questions, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
                gold = tuple(Gold(str(g["doc"]), str(g["contains"])) for g in row["gold"])
                q = Question(str(row["id"]), str(row["question"]), gold, row.get("answer"),
                             tuple(str(k) for k in row.get("keywords") or ()),
                             str(row.get("kind", "")))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{where}: expected a JSON object with id, question and gold "
                                 f"[{{doc, contains}}, ...] ({type(e).__name__}: {e})") from None
            if not q.question.strip() or any(not g.contains.strip() for g in gold):
                raise ValueError(f"{where}: empty question or gold text")
            if q.id in seen:
                raise ValueError(f"{where}: id {q.id!r} is given twice")
            seen.add(q.id)
            questions.append(q)
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def questions_from_samples(rows: Sequence[dict]) -> list[Question]:
    """The answerable cited-RAG synth samples as questions. Gold: a passage of the seed
    document holding one of the seed passage's sentences (of 30 characters or more: a
    "Oui." would be everywhere). The synth stage cuts its own, shorter passages, so a seed
    passage may straddle two of the index's."""
    questions = []
    for row in rows:
        meta = row["meta"]
        gold_ids = meta.get("gold") or []
        if meta.get("outcome") == "unanswerable" or not gold_ids or "gold_passage" not in meta:
            continue
        doc = str(meta["gold_passage"]).rsplit("#", 1)[0]
        seed = dict((str(i), str(t)) for i, t in meta["sources"]).get(str(gold_ids[0]), "")
        gold = tuple(Gold(doc, s) for s in sentences(seed) if len(s) >= 30)
        if gold:
            questions.append(Question(str(row["id"]), str(meta["query"]), gold, kind="synth"))
    if not questions:
        raise ValueError("no answerable cited-RAG sample among the synth samples")
    return questions


class QuotingLM:
    """`fournil.index.answer.ChatModel` over an evaluated model, whose quotes can be
    constrained to be verbatim (`fournil.formats.quote_constraint`). Both ways go through
    the same greedy loop over the model's cached forward pass (`LanguageModel.new_scorer`),
    so constrained and unconstrained answers differ by the constraint alone. The token trie
    is built once per model, on the first constrained answer (~0.3 s for 49k tokens).
    `prefix` starts every answer as if the model had written it (`fournil ask
    --answer-prefix`: '<ref name="' opens a quote for a model not tuned on cited answers)."""

    def __init__(self, lm: LanguageModel, prefix: str = "") -> None:
        self.lm, self.prefix = lm, prefix
        self._trie: TokenTrie | None = None
        self._scorer = None  # kept: the instruction every prompt starts with is read once

    def quote_constraint(self, sources: Mapping[str, str]) -> QuoteConstraint:
        if self._trie is None:
            self._trie = TokenTrie(self.lm.token_bytes())
        return QuoteConstraint(self._trie, sources)

    def chat(self, messages: Sequence[dict], max_new_tokens: int,
             constraint: QuoteConstraint | None = None) -> str:
        prefix = self.lm.encode(self.prefix) if self.prefix else []
        if constraint is not None:
            for token in prefix:
                constraint.advance(token)
        ids = self.lm.chat_ids(messages) + prefix
        if len(ids) >= self.lm.max_len:
            raise PromptTooLong(f"a chat of {len(ids)} tokens leaves no room to answer in "
                                f"{self.lm.max_len}")
        budget = min(max_new_tokens, self.lm.max_len - len(ids))
        if self._scorer is None:
            self._scorer = self.lm.new_scorer()
        scorer = self._scorer
        logits = scorer.start(ids)
        out: list[int] = []
        for step in range(budget):
            token = int(constrain(logits, constraint, budget - step).argmax())
            if constraint is not None:
                constraint.advance(token)
            out.append(token)
            if token in self.lm.stop_ids:
                break
            logits = scorer.feed([token])[-1]
        return self.prefix + self.lm.decode(out)


def gold_rank(question: Question, retriever: Retriever, depth: int = max(RANKS)) -> int | None:
    """The rank (from 1) of the first gold passage among the hits, None past `depth`."""
    for rank, hit in enumerate(retriever.search(question.question, depth), 1):
        if question.is_gold(hit.passage):
            return rank
    return None


def retrieval_scores(ranks: Sequence[int | None]) -> dict:
    n = len(ranks) or float("nan")
    scores = {f"recall@{k}": sum(r is not None and r <= k for r in ranks) / n for k in RANKS}
    scores["mrr"] = sum(1 / r for r in ranks if r) / n
    return scores


def is_correct(question: Question, text: str) -> bool | None:
    """Every key word in the answer, accents and case aside; None: nothing to check."""
    if not question.keywords:
        return None
    folded = fold(text.lower())
    return all(fold(k.lower()) in folded for k in question.keywords)


def score_answer(question: Question, result) -> dict:
    """One `answer` result against its question's gold, as a flat dict."""
    shown = {str(i + 1): h.passage for i, h in enumerate(result.hits)}
    gold_refs = [ref for ref, p in shown.items() if question.is_gold(p)]
    written = result.model_answer or ""
    citations = parse_citations(written)
    unclosed = written.count('<ref name="') - len(REF.findall(written))
    cited = list(dict.fromkeys(c.source_id for c in citations if c.source_id in shown))
    verbatim = sum(c.source_id in shown and is_verbatim(c.quote, shown[c.source_id].text)
                   for c in citations)
    return {
        "id": question.id, "answerable": question.answerable, "kind": question.kind,
        "refused": result.refused, "reason": result.reason,
        "relevance": round(result.relevance, 4), "retrieved": [p.id for p in shown.values()],
        "gold_shown": gold_refs, "cited": cited,
        "quotes": len(citations) + max(unclosed, 0), "verbatim": verbatim,
        "correct": None if not question.answerable or not question.keywords
        else not result.refused and bool(is_correct(question, written)),
        "constrained": result.constrained, "answer": written,
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def answer_scores(scored: Sequence[dict]) -> dict:
    answerable = [s for s in scored if s["answerable"]]
    unanswerable = [s for s in scored if not s["answerable"]]
    citing = [s for s in answerable if s["cited"]]
    quotes = sum(s["quotes"] for s in scored)
    checkable = [s for s in answerable if s["correct"] is not None]
    return {
        "citation_precision": _mean([sum(c in s["gold_shown"] for c in s["cited"])
                                     / len(s["cited"]) for s in citing]),
        "citation_recall": _mean([float(any(c in s["gold_shown"] for c in s["cited"]))
                                  for s in answerable if s["gold_shown"]]),
        "verbatim": sum(s["verbatim"] for s in scored) / quotes if quotes else float("nan"),
        "quotes": quotes,
        "correct": _mean([float(s["correct"]) for s in checkable]),
        "false_refusal": _mean([float(s["refused"]) for s in answerable]),
        "refusal": _mean([float(s["refused"]) for s in unanswerable]),
        "refusal_retrieval": _mean([float(s["reason"] == NOTHING_RELEVANT)
                                    for s in unanswerable]),
    }


def evaluate_ask(model: ChatModel | None, retriever: Retriever, questions: Sequence[Question],
                 k: int = 3, max_new_tokens: int = 256,
                 modes: Sequence[bool] = (False, True), journal: Journal | None = None) -> dict:
    """Retrieval scores, and with a model, its answers' scores (module docstring) for each
    mode: unconstrained (False) and quotes constrained to be verbatim (True; its scores end
    in `_constrained`). "items" holds each answer and its checks, "rejected" the questions
    whose prompt does not fit the model's context. `model` None scores retrieval only.
    Each answer's checks go to the `journal` (if given) as it comes; answers already in it
    are not asked again."""
    answerable = [q for q in questions if q.answerable]
    result: dict = {"n": len(questions), "answerable": len(answerable),
                    "unanswerable": len(questions) - len(answerable),
                    **retrieval_scores([gold_rank(q, retriever) for q in answerable])}
    if model is None:
        return result
    done = dict(journal.done) if journal is not None else {}
    items: list[dict] = []
    rejected: dict[str, dict] = {}  # a prompt too long is too long in every mode
    with tqdm(total=len(questions) * len(modes), desc="ask", unit="answer",
              mininterval=5.0) as bar:
        for constrained in modes:
            scored = []
            for q in questions:
                key = f"{'constrained' if constrained else 'free'}/{q.id}"
                if key not in done:
                    try:
                        reply = answer(q.question, retriever, model, k=k,
                                       max_new_tokens=max_new_tokens, constrained=constrained)
                        row = {"id": key, "scored": score_answer(q, reply)}
                    except PromptTooLong as e:
                        row = {"id": key, "rejected": {"id": q.id, "reason":
                                                       "ask:prompt_too_long",
                                                       "detail": str(e)}}
                    done[key] = row
                    if journal is not None:
                        journal.add([row])
                bar.update()
                if "rejected" in done[key]:
                    rejected[q.id] = done[key]["rejected"]
                else:
                    scored.append(done[key]["scored"])
            suffix = "_constrained" if constrained else ""
            result.update({f"{name}{suffix}": v for name, v in answer_scores(scored).items()})
            items += scored
    return {**result, "rejected": list(rejected.values()), "items": items}
