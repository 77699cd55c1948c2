"""A question answered from the index, with its sources, or a refusal that says why.

The steps, shared by `fournil ask`, the `ask` evaluation and (through the same function)
the server:
1. the question is checked: an empty one, or one over `MAX_QUESTION_CHARS`, is an error for
   the caller (`QuestionError`), not a question the index could answer;
2. the top `k` passages of distinct texts are retrieved;
3. when they cover too little of the question (`relevance` under `MIN_RELEVANCE`), the answer
   is a refusal and the model is not asked: nothing relevant was found;
4. else the model gets the prompt of the synth RAG task it was trained on
   (`fournil.formats.prompts.rag_messages`: sources "1".."k", then the question) and answers,
   quotes constrained to be verbatim when the model can be constrained (`constrained=True`);
5. the answer's `<ref name="N">quote</ref>` citations become sources: the passage's
   provenance and the quote's offsets in its document. An answer that cites none of the
   passages is a refusal too ("the sources do not answer"): nothing it says can be checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fournil.formats.citations import REF, parse_citations
from fournil.formats.prompts import rag_messages
from fournil.index.analyzer import analyze
from fournil.index.passages import Passage, title_and_text
from fournil.index.retriever import Hit, Retriever
from fournil.index.spans import locate
from fournil.synth.verify import is_refusal

# Three passages: the synth RAG task trains with 3-6 sources; recall@3 of the default index
# is 0.94 on the 47 answerable hand-written questions (bench/index_bench.py).
DEFAULT_K = 3
# A question is a sentence or two; a longer text is a mistake (a document pasted as the
# question), and a 100 kB one would cost the analyzer and the prompt for nothing. The synth
# RAG task's queries are at most 400 characters.
MAX_QUESTION_CHARS = 1000
# Refuse without asking the model when the best passage shown holds less than this share of
# the question's terms (weighted by idf, so a rare name counts more than a common verb).
# On the 59 hand-written questions (tests/data/ask-fr.jsonl): the lowest answerable question
# is at 0.46; below 0.40 are 3 of the 12 unanswerable ones (TVA, crêpes, pare-feu). The
# others share most of their words with some passage (the 2006 season for a 2012 question):
# telling those apart is the model's job, "the sources do not answer".
MIN_RELEVANCE = 0.40
MAX_NEW_TOKENS = 256

NOTHING_RELEVANT = "nothing_relevant"
NO_CITATION = "no_citation"
SOURCES_DO_NOT_ANSWER = "sources_do_not_answer"
REFUSALS = {
    NOTHING_RELEVANT: "Je ne trouve rien dans les documents indexés qui permette de répondre à "
                      "cette question.",
    SOURCES_DO_NOT_ANSWER: "Les passages trouvés ne permettent pas de répondre à cette "
                           "question.",
    NO_CITATION: "Je ne peux pas répondre avec une source : la réponse du modèle ne cite aucun "
                 "des passages trouvés.",
}


class QuestionError(ValueError):
    """A question that cannot be asked (empty, too long): the caller's mistake."""


class ChatModel(Protocol):
    """What answering needs of a model: a greedy answer to a chat
    (`fournil.eval.lm.LanguageModel` is one). One that can also constrain its quotes has
    `quote_constraint(sources)` and takes its result as `chat(..., constraint=...)`
    (`generate_answer`)."""

    def chat(self, messages: Sequence[dict], max_new_tokens: int) -> str: ...


@dataclass(frozen=True)
class Source:
    """One citation of the answer: which passage it quotes, and where in its document."""

    ref: str  # the passage's number in the prompt, as the answer cites it
    passage: Passage
    quote: str  # as the model wrote it
    span: tuple[int, int] | None  # the quote's offsets in the document; None: not verbatim

    def to_dict(self) -> dict:
        p = self.passage
        start, end = self.span or (None, None)
        return {"ref": self.ref, "id": p.doc_id, "passage": p.id, "title": p.title,
                "author": p.author, "date": p.date, "source": p.source, "license": p.license,
                "url": p.url, "quote": self.quote, "verbatim": self.span is not None,
                "start": start, "end": end}


@dataclass
class Answer:
    question: str
    text: str  # the model's answer with its <ref> markup, or the refusal
    refused: bool
    reason: str | None = None  # why it is a refusal (a key of REFUSALS)
    sources: list[Source] = field(default_factory=list)  # the citations, in order
    hits: list[Hit] = field(default_factory=list)  # the passages shown to the model
    relevance: float = 0.0
    model_answer: str | None = None  # what the model wrote (None: it was not asked)
    constrained: bool = False  # whether the quotes were constrained to be verbatim

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.text, "refused": self.refused,
                "reason": self.reason, "sources": [s.to_dict() for s in self.sources],
                "passages": [{"ref": str(i + 1), "passage": h.passage.id,
                              "id": h.passage.doc_id, "title": h.passage.title,
                              "license": h.passage.license, "score": round(h.score, 4),
                              "start": h.passage.start, "end": h.passage.end}
                             for i, h in enumerate(self.hits)],
                "relevance": round(self.relevance, 4), "model_answer": self.model_answer,
                "constrained": self.constrained}


def check_question(question: str) -> str:
    question = question.strip()
    if not question:
        raise QuestionError("empty question: ask something, e.g. fournil ask \"Qui a inventé "
                            "l'échappement ?\"")
    if len(question) > MAX_QUESTION_CHARS:
        raise QuestionError(f"the question is {len(question)} characters long, over the "
                            f"{MAX_QUESTION_CHARS} a question may have: ask it in a sentence "
                            "or two")
    return question


def relevance(question: str, hits: Sequence[Hit], retriever: Retriever) -> float:
    """The largest share of the question's distinct terms, weighted by idf, that one of the
    passages holds: 1.0 when a passage has them all, 0 when none has any."""
    terms = sorted(set(analyze(question)))
    if not terms or not hits:
        return 0.0
    n = len(retriever.passages)
    weight = {t: math.log(1 + (n - df + 0.5) / (df + 0.5))  # BM25's idf; unknown: df 0
              for t, df in zip(terms, retriever.document_frequencies(terms), strict=True)}
    total = sum(weight.values())
    return max(sum(weight[t] for t in set(analyze(title_and_text(h.passage))) if t in weight)
               / total for h in hits)


def cited_sources(answer: str, shown: Mapping[str, Passage]) -> list[Source]:
    """The citations of `answer` that name a passage it was shown, with their offsets."""
    sources = []
    for citation in parse_citations(answer):
        passage = shown.get(citation.source_id)
        if passage is None:
            continue
        span = locate(citation.quote, passage.text)
        if span is not None:
            span = (passage.start + span[0], passage.start + span[1])
        sources.append(Source(citation.source_id, passage, citation.quote, span))
    return sources


def generate_answer(model: ChatModel, messages: list[dict], sources: Mapping[str, str],
                    max_new_tokens: int, constrained: bool) -> tuple[str, bool]:
    """The model's answer, and whether its quotes were constrained to be verbatim.

    The hook for constrained decoding: a model that can build a constraint over these
    sources (`quote_constraint(sources)`, from its token trie: `fournil.eval.ask.QuotingLM`,
    `fournil.serve.answerer.ServedChatModel`) gets it through `chat(..., constraint=...)`; any
    other model (or one whose `quote_constraint` gives None) answers unconstrained, and the
    answer says so (`constrained: false`) rather than claiming quotes it did not enforce."""
    build = getattr(model, "quote_constraint", None) if constrained else None
    constraint = build(sources) if build is not None else None
    if constraint is None:
        return model.chat(messages, max_new_tokens), False
    return model.chat(messages, max_new_tokens, constraint=constraint), True


def answer(question: str, retriever: Retriever, model: ChatModel | None, k: int = DEFAULT_K,
           min_relevance: float = MIN_RELEVANCE, max_new_tokens: int = MAX_NEW_TOKENS,
           constrained: bool = True) -> Answer:
    """Retrieve, refuse or ask the model, and trace its citations (module docstring).
    `model` None retrieves only: the answer is the refusal or an empty text."""
    question = check_question(question)
    hits = retriever.search(question, k)
    score = relevance(question, hits, retriever)
    if score < min_relevance:
        return Answer(question, REFUSALS[NOTHING_RELEVANT], True, NOTHING_RELEVANT, hits=hits,
                      relevance=score)
    if model is None:
        return Answer(question, "", False, hits=hits, relevance=score)
    shown = {str(i + 1): h.passage for i, h in enumerate(hits)}
    texts = {ref: p.text for ref, p in shown.items()}
    messages = rag_messages(question, list(texts.items()))
    text, was_constrained = generate_answer(model, messages, texts, max_new_tokens,
                                            constrained)
    sources = cited_sources(text, shown)
    result = Answer(question, text, False, sources=sources, hits=hits, relevance=score,
                    model_answer=text, constrained=was_constrained)
    if not sources:
        result.reason = SOURCES_DO_NOT_ANSWER if is_refusal(text) else NO_CITATION
        result.refused, result.text = True, REFUSALS[result.reason]
    return result


def render_text(result: Answer) -> str:
    """The answer for a terminal: quotes as « … » [N], then each cited source with its
    provenance and where the quote is in the document."""
    if result.refused:
        return result.text
    body = REF.sub(lambda m: f"« {m.group(2).strip()} » [{m.group(1).strip()}]", result.text)
    lines = [body.strip(), "", "Sources :"]
    for s in result.sources:
        p = s.passage
        who = ", ".join(x for x in (p.author, p.date) if x)
        lines.append(f"[{s.ref}] {p.title or p.doc_id}" + (f" ({who})" if who else "")
                     + f" · {p.license}" + (f" · {p.url}" if p.url else ""))
        where = (f"{p.doc_id}, caractères {s.span[0]}–{s.span[1]}" if s.span else
                 "citation introuvable telle quelle dans le passage")
        lines.append(f"    « {s.quote.strip()} » ({where})")
    return "\n".join(lines)
