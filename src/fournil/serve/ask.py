"""`POST /v1/ask`: a question in, `fournil ask`'s answer out, as plain JSON.

Request: `{"question": str, "verbatim_quotes": bool (default true), "max_tokens": int}`.
Response: `fournil.index.answer.Answer.to_dict()`, the same object `fournil ask --json`
prints: `answer` (the model's text with its `<ref>` markup, or the refusal), `refused`,
`reason`, `sources` (each citation: the passage's document id, title, author, date, source,
license and URL, the quote, `verbatim`, and its `start`/`end` in the document), `passages`
(those shown to the model), `relevance`, `model_answer`, `constrained`.

The answer is `fournil.serve.answerer.answer_from_index` (what `fournil ask` and `fournil chat
--index` print), run in a generation slot of the server (so it waits for one, or gets a 429,
as a chat does) with the served model answering greedily.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fournil.index.answer import MAX_NEW_TOKENS, Answer, QuestionError, check_question
from fournil.serve.answerer import ServedChatModel, answer_from_index
from fournil.serve.engine import HFServedModel, ServedModel
from fournil.serve.rag import Quoting, ServedIndex
from fournil.serve.requests import APIError, short_json

# ServedChatModel moved to fournil.serve.answerer (shared with the terminal verbs); named
# here too for the code that imports it from this module (bench/ask_bench.py)
__all__ = ["AskJob", "AskRequest", "ServedChatModel", "parse_ask_request"]

_ASK_FIELDS = {"question", "verbatim_quotes", "max_tokens"}


@dataclass
class AskRequest:
    question: str
    verbatim_quotes: bool
    max_tokens: int


def parse_ask_request(body: dict) -> AskRequest:
    """A `/v1/ask` body, validated; raises APIError (400) naming the field."""
    unknown = sorted(set(body) - _ASK_FIELDS)
    if unknown:
        raise APIError(400, f"unrecognized request argument(s): {', '.join(unknown)} (expected "
                       f"{', '.join(sorted(_ASK_FIELDS))})", unknown[0], "unknown_parameter")
    question = body.get("question")
    if not isinstance(question, str):
        raise APIError(400, f"question must be a string, got {short_json(question)}",
                       "question", "invalid_type")
    try:
        question = check_question(question)
    except QuestionError as e:
        raise APIError(400, str(e), "question", "invalid_question") from None
    verbatim = body.get("verbatim_quotes", True)
    if not isinstance(verbatim, bool):
        raise APIError(400, f"verbatim_quotes must be true or false, got {short_json(verbatim)}",
                       "verbatim_quotes", "invalid_type")
    max_tokens = body.get("max_tokens", MAX_NEW_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise APIError(400, f"max_tokens must be an integer >= 1, got {short_json(max_tokens)}",
                       "max_tokens", "invalid_value")
    return AskRequest(question, verbatim, max_tokens)


class AskJob:
    """One `/v1/ask` in a generation slot, with `Completion`'s interface for the server's
    `Generations`: `text()` answers; then `result` is the Answer, or `error` the reason
    there is none (a question that does not fit the context)."""

    def __init__(self, request: AskRequest, index: ServedIndex,
                 served: ServedModel | HFServedModel, quoting: Quoting,
                 answer_prefix: str = "") -> None:
        self.request, self.index, self.served, self.quoting = request, index, served, quoting
        self.answer_prefix = answer_prefix
        self.cancel = threading.Event()
        self.finish_reason: str | None = None
        self.result: Answer | None = None
        self.error: QuestionError | None = None

    def text(self) -> str:
        try:
            self.result = answer_from_index(
                self.request.question, self.served, self.index, self.quoting,
                max_new_tokens=self.request.max_tokens, constrained=self.request.verbatim_quotes,
                prefix=self.answer_prefix, cancel=self.cancel)
        except QuestionError as e:
            self.error = e
            return ""
        finally:
            self.finish_reason = "cancelled" if self.cancel.is_set() else "stop"
        return self.result.text
