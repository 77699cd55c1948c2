"""Cited RAG: does the model answer from the sources it is given, quote them verbatim, cite
the right ones, and say so when they do not hold the answer?

The model gets `fournil.formats.prompts.rag_messages(query, sources)` (the chat synth and SFT use)
and answers greedily; `fournil.formats.citations.check_citations` reads its
`<ref name="N">quote</ref>` citations. Items come from synth samples of task "rag" (meta
{"query", "sources": [[id, text], ...], "gold": [ids], "outcome"}); an item is unanswerable
when its outcome is "unanswerable" or it has no gold source.

Scores, over the answerable items:
- `with_quote`: share of answers with at least one quote;
- `all_verbatim`: share of answers with at least one quote, every one verbatim in the source
  it cites (whitespace aside);
- `quotes_verbatim`: verbatim quotes over all quotes, pooled;
- `precision`: cited sources that are gold, averaged over the answers that cite something;
- `recall`: gold sources cited, averaged over all answerable items;
- `false_refusal`: share of answers that refuse (and cite nothing).
Over the unanswerable items, `refusal`: the share of answers that refuse. A refusal is what
the synth verifier calls one (`fournil.synth.verify.is_refusal`: "les sources ne permettent
pas de répondre", "aucune information", ...) in an answer that cites nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fournil.eval.lm import LanguageModel, PromptTooLong
from fournil.formats.citations import check_citations, parse_citations
from fournil.formats.prompts import rag_messages
from fournil.synth.verify import is_refusal as says_it_cannot


@dataclass(frozen=True)
class Item:
    id: str
    query: str
    sources: list[tuple[str, str]]
    gold: list[str]
    answerable: bool


def items_from_samples(rows: Sequence[dict]) -> list[Item]:
    """Items from synth samples of task "rag"; a malformed meta is an error naming the row."""
    items = []
    for row in rows:
        meta = row["meta"]
        try:
            sources = [(str(sid), str(text)) for sid, text in meta["sources"]]
            gold = [str(g) for g in meta.get("gold") or []]
            query = meta["query"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"sample {row['id']}: meta must have 'query' and 'sources' as "
                             f"[[id, text], ...] ({type(e).__name__}: {e})") from None
        unknown = [g for g in gold if g not in dict(sources)]
        if unknown:
            raise ValueError(f"sample {row['id']}: gold source(s) {unknown} are not among its "
                             f"sources {[s for s, _ in sources]}")
        answerable = bool(gold) and meta.get("outcome", "answerable") != "unanswerable"
        items.append(Item(row["id"], query, sources, gold, answerable))
    return items


def is_refusal(answer: str) -> bool:
    return says_it_cannot(answer) and not parse_citations(answer)


def score_answer(item: Item, answer: str) -> dict:
    """One answer's citation check and refusal, as a flat dict."""
    check = check_citations(answer, dict(item.sources), item.gold)
    return {"id": item.id, "answerable": item.answerable, "answer": answer,
            "quotes": check.quotes, "verbatim": check.verbatim, "cited": check.cited,
            "unknown": check.unknown, "gold": item.gold, "all_verbatim": check.all_verbatim,
            "precision": check.precision, "recall": check.recall,
            "refusal": is_refusal(answer)}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(scored: Sequence[dict]) -> dict:
    """The scores of the module docstring from `score_answer` rows."""
    answerable = [s for s in scored if s["answerable"]]
    unanswerable = [s for s in scored if not s["answerable"]]
    quotes = sum(s["quotes"] for s in answerable)
    return {
        "n": len(scored), "answerable": len(answerable), "unanswerable": len(unanswerable),
        "with_quote": _mean([float(s["quotes"] > 0) for s in answerable]),
        "all_verbatim": _mean([float(s["all_verbatim"]) for s in answerable]),
        "quotes_verbatim": sum(s["verbatim"] for s in answerable) / quotes if quotes
        else float("nan"),
        "precision": _mean([s["precision"] for s in answerable if s["cited"]]),
        "recall": _mean([s["recall"] for s in answerable]),
        "false_refusal": _mean([float(s["refusal"]) for s in answerable]),
        "refusal": _mean([float(s["refusal"]) for s in unanswerable]),
    }


def evaluate_rag(lm: LanguageModel, items: Sequence[Item], max_new_tokens: int = 256) -> dict:
    """`summarize` of the model's answers, with "items" (each answer and its checks) and
    "rejected" (items whose prompt does not fit the model's context, with the reason)."""
    scored, rejected = [], []
    for item in items:
        try:
            answer = lm.chat(rag_messages(item.query, item.sources), max_new_tokens)
        except PromptTooLong as e:
            rejected.append({"id": item.id, "reason": "rag:prompt_too_long", "detail": str(e)})
            continue
        scored.append(score_answer(item, answer))
    return {**summarize(scored), "rejected": rejected, "items": scored}
