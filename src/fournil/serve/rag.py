"""Answers grounded in sources, in the server: what `fournil serve --index DIR` adds to chat
completions, and the quote constraint for any chat that shows the model sources.

With an index, the last user message of a chat is the question. It is answered as
`fournil ask` answers it (`fournil.index.answer`: the same checks, passages, threshold and
citations): the top passages go into the prompt in the synth RAG task's format
(`fournil.formats.prompts.rag_messages`, sources "1".."k", what the model was tuned on), and
when they hold too little of the question the answer is the refusal, without the model.
Without an index, a chat whose last user message already holds `<source id="N">` blocks (the
format `render_sources` writes) is grounded in those.

Either way, while the model writes `<ref name="N">…</ref>` its tokens are constrained so the
quote is a span of source N (`fournil.formats.quote_constraint`), unless the request says
`"verbatim_quotes": false` (for comparison). The token trie the constraint walks is built
once per served model, at its first grounded request (~0.3 s for a 49k vocabulary).

An answer prefix (`fournil serve --answer-prefix`) starts every grounded answer with given
text, as if the model had written it: `<ref name="` makes a model that was not tuned on the
cited-RAG format (SmolLM2-135M prompted as it is) open its answer with a quote, the source and
the words of which the constraint leaves to the model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fournil.formats.citations import parse_sources
from fournil.formats.prompts import rag_messages
from fournil.formats.quote_constraint import QuoteConstraint
from fournil.formats.token_trie import TokenTrie
from fournil.index.answer import (
    DEFAULT_K,
    MIN_RELEVANCE,
    NO_CITATION,
    NOTHING_RELEVANT,
    REFUSALS,
    SOURCES_DO_NOT_ANSWER,
    QuestionError,
    check_question,
    cited_sources,
    relevance,
)
from fournil.index.passages import Passage
from fournil.index.retriever import Retriever
from fournil.index.store import open_index
from fournil.synth.verify import is_refusal


class Quoting:
    """Quote constraints for one tokenizer: its token trie, built on first use."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self._trie: TokenTrie | None = None
        self._lock = threading.Lock()

    def trie(self) -> TokenTrie:
        with self._lock:  # two first requests at once build it once
            if self._trie is None:
                self._trie = TokenTrie.from_tokenizer(self.tokenizer)  # type: ignore[arg-type]
            return self._trie

    def constraint(self, sources: Mapping[str, str]) -> QuoteConstraint:
        return QuoteConstraint(self.trie(), sources)


@dataclass
class Grounding:
    """One request's sources: what the model is shown and what its quotes are checked
    against. `passages` are the index's (empty when the client wrote the sources);
    `refusal` is the reason to answer with a refusal instead of the model."""

    messages: list[dict]  # the chat the model answers
    texts: dict[str, str]  # source id -> text, as shown to the model
    passages: dict[str, Passage] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    constraint: QuoteConstraint | None = None
    relevance: float | None = None
    refusal: str | None = None
    prefix: str = ""  # the start of the answer, written for the model

    def prefill(self, tokenizer: object) -> list[int]:
        """The prefix's token ids, to append to the prompt; the constraint follows them as if
        the model had written them (a ValueError if it forbids them)."""
        if not self.prefix:
            return []
        ids = tokenizer.encode(self.prefix, add_special_tokens=False).ids  # type: ignore[attr-defined]
        if self.constraint is not None:
            for token in ids:
                self.constraint.advance(token)
        return ids

    def sources(self) -> list[dict]:
        """The sources shown, with the index's provenance when they come from it (named as
        `fournil ask --json` names them: `id` the document's, `passage` the passage's)."""
        if not self.passages:
            return [{"ref": ref, "text": text} for ref, text in self.texts.items()]
        return [{"ref": ref, "passage": p.id, "id": p.doc_id, "title": p.title,
                 "author": p.author, "date": p.date, "source": p.source, "license": p.license,
                 "url": p.url, "start": p.start, "end": p.end, "text": p.text,
                 "score": round(self.scores[ref], 4)} for ref, p in self.passages.items()]

    def report(self, answer: str | None) -> dict:
        """The response's `fournil` field: the sources, and once the answer (what the model
        wrote after the prefix) is known, its citations (each quote with its offsets in its
        document, `start` and `end`; in the source's text for a client's sources) and whether
        it is a refusal."""
        out: dict = {"sources": self.sources(), "verbatim_quotes": self.constraint is not None}
        if self.relevance is not None:
            out["relevance"] = round(self.relevance, 4)
        if answer is None:
            return out
        answer = self.prefix + answer
        if self.refusal:
            return {**out, "citations": [], "refused": True, "reason": self.refusal}
        shown = self.passages or {ref: _bare_passage(ref, t) for ref, t in self.texts.items()}
        citations = []
        for source in cited_sources(answer, shown):
            c = source.to_dict()
            citations.append(c if self.passages else
                             {k: c[k] for k in ("ref", "quote", "verbatim", "start", "end")})
        reason = None
        if self.passages and not citations:  # as `fournil ask` judges an answer
            reason = SOURCES_DO_NOT_ANSWER if is_refusal(answer) else NO_CITATION
        return {**out, "citations": citations, "refused": reason is not None, "reason": reason}


def _bare_passage(ref: str, text: str) -> Passage:
    """A client's source as a passage of its own (offsets are then in its text)."""
    return Passage(id=ref, doc_id=ref, start=0, end=len(text), text=text, title=None,
                   author=None, date=None, source="request", license="", url=None)


class ServedIndex:
    """A passage index next to the served model: retrieval for chat completions and
    `/v1/ask`, with `fournil ask`'s defaults (k passages, the relevance threshold)."""

    def __init__(self, folder: str | Path, k: int = DEFAULT_K,
                 min_relevance: float = MIN_RELEVANCE) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.folder = Path(folder)
        self.retriever: Retriever = open_index(self.folder)  # checked: version, sha256
        self.k, self.min_relevance = k, min_relevance

    def ground(self, messages: list[dict], quoting: Quoting | None) -> Grounding:
        """The chat with its last user message answered from the index; QuestionError when
        there is no question to answer (no user message last, empty, too long)."""
        if not messages or messages[-1]["role"] != "user":
            raise QuestionError("with an index, the last message must be the user's question")
        question = check_question(messages[-1]["content"])
        hits = self.retriever.search(question, self.k)
        score = relevance(question, hits, self.retriever)
        if score < self.min_relevance:
            return Grounding(messages, {}, relevance=score, refusal=NOTHING_RELEVANT)
        passages = {str(i + 1): h.passage for i, h in enumerate(hits)}
        texts = {ref: p.text for ref, p in passages.items()}
        return Grounding(
            [*messages[:-1], *rag_messages(question, list(texts.items()))], texts, passages,
            {str(i + 1): h.score for i, h in enumerate(hits)},
            quoting.constraint(texts) if quoting else None, score)


def ground_in_request(messages: list[dict], quoting: Quoting | None) -> Grounding | None:
    """Without an index: the sources a client put in its last user message, if any."""
    if not messages or messages[-1]["role"] != "user":
        return None
    texts = dict(parse_sources(messages[-1]["content"]))
    if not texts:
        return None
    return Grounding(messages, texts, constraint=quoting.constraint(texts) if quoting else None)


class Grounder:
    """What grounds the chats of one server: its index if it has one, else the sources a
    client wrote; `prefix` starts every answer that is not a refusal. Called with the chat's
    messages and whether its quotes are constrained."""

    def __init__(self, quoting: Quoting, index: ServedIndex | None = None,
                 prefix: str = "") -> None:
        self.quoting, self.index, self.prefix = quoting, index, prefix

    def __call__(self, messages: list[dict], verbatim: bool) -> Grounding | None:
        quoting = self.quoting if verbatim else None
        if self.index is not None:
            grounding = self.index.ground(messages, quoting)
        else:
            grounding = ground_in_request(messages, quoting)
        if grounding is not None and not grounding.refusal:
            grounding.prefix = self.prefix
        return grounding


class Refusal:
    """The answer when nothing relevant was retrieved: `Completion`'s interface, without the
    model (no tokens generated)."""

    def __init__(self, reason: str, prompt_tokens: int) -> None:
        self.reason = reason
        self.cancel = threading.Event()
        self.finish_reason: str | None = None
        self.prompt_tokens, self.completion_tokens = prompt_tokens, 0

    def __iter__(self) -> Iterator[str]:
        self.finish_reason = "stop"
        yield REFUSALS[self.reason]

    def text(self) -> str:
        return "".join(self)

