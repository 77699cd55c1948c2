"""What the server accepts: a request body read under a size cap and a deadline, parsed as JSON,
and validated field by field against OpenAI's schemas, before any work is done. Every
refusal is an `APIError`, which the client gets as OpenAI's error body (`{"error": {"message",
"type", "param", "code"}}`) naming the field and the numbers: 400 for bad JSON, unknown or
mistyped fields, unknown roles, out-of-range values and prompts that do not fit the context;
404 for an unknown model; 413 and 408 for bodies too large or too slow (see server.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse

from fournil.formats.chatml import ROLES
from fournil.serve.engine import Sampling, ServedModel
from fournil.serve.rag import Grounding, QuestionError

MAX_BODY_BYTES = 1 << 20  # far above any prompt that fits a small model's context


BODY_TIMEOUT_S = 20.0  # a 1 MiB body at 0.4 Mbit/s


MAX_STOP_STRINGS = 4  # as OpenAI


# Parameters OpenAI defines that fournil accepts only at the value that changes nothing.
_NEUTRAL: dict[str, tuple] = {
    "n": (1,), "best_of": (1,), "presence_penalty": (0,), "frequency_penalty": (0,),
    "logit_bias": ({},), "logprobs": (False, 0), "top_logprobs": (0,), "echo": (False,),
    "suffix": ("",),
}


_COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream",
           "stream_options", "n", "presence_penalty", "frequency_penalty", "logit_bias",
           "logprobs", "user"}


_COMPLETION_FIELDS = _COMMON | {"prompt", "echo", "suffix", "best_of"}


# verbatim_quotes: fournil's extension (`fournil.serve.rag`); false turns the quote
# constraint off, for comparison
_CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens", "top_logprobs", "verbatim_quotes"}

# grounds a chat in sources (the index's or the client's): (messages, verbatim_quotes) ->
# the grounding, None for a chat without sources; raises QuestionError
Grounder = Callable[[list[dict], bool], Grounding | None]


class APIError(Exception):
    """An error the client gets as an OpenAI-style JSON body."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status, message, param, code, type)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 429 else None
        if self.status in (408, 413):  # the rest of the body is unread: the connection is done
            headers = {"Connection": "close"}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The raw body, read as it arrives and never past `max_bytes` (413), within `timeout_s`
    of the request's head (408). A declared Content-Length over the limit is refused before
    any byte is read; a chunked body is cut off as soon as it passes the limit."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"request body of {declared} bytes is over the limit of "
                       f"{max_bytes}", None, "request_too_large")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise APIError(413, f"request body over the limit of {max_bytes} bytes (read "
                               f"up to {size} bytes, then stopped)", None, "request_too_large")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        raise APIError(408, f"the request body did not arrive within {timeout_s:g} s "
                       f"({size} bytes received)", None, "request_timeout") from None
    return b"".join(chunks)


def parse_json_body(raw: bytes) -> dict:
    """The body as a JSON object; anything else (including text that is not Unicode) is a 400
    naming what is wrong."""
    try:
        body = json.loads(raw)
    except RecursionError:  # json's C parser recurses once per nesting level
        raise APIError(400, "the request body is not valid JSON: nested too deeply", None,
                       "invalid_json") from None
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8/16/32
        raise APIError(400, f"the request body is not valid JSON: {e}", None,
                       "invalid_json") from e
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {short_json(body)}",
                       None, "invalid_json")
    if (where := _lone_surrogate(body)) is not None:
        name = where or "a field name"
        raise APIError(400, f"the request body is not valid JSON text: {name} holds a lone "
                       "UTF-16 surrogate (an unpaired \\uD800-\\uDFFF escape), which is not "
                       "a Unicode character", where or None, "invalid_json")
    return body


def _lone_surrogate(value: object) -> str | None:
    """Where in a parsed JSON value a string holds a lone surrogate: its path, like
    `messages[0].content`, or "" if it is a field name; None if none does. JSON's `\\ud800`
    escapes parse to such strings, which no tokenizer or UTF-8 encoder accepts."""
    stack: list[tuple[str, object]] = [("", value)]
    while stack:  # a loop, not recursion: the value may be nested a thousand deep
        path, v = stack.pop()
        if isinstance(v, str):
            if _has_surrogate(v):
                return path
        elif isinstance(v, dict):
            for key, item in v.items():
                if _has_surrogate(key):
                    return ""
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(v))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    sampling: Sampling
    stream: bool
    include_usage: bool
    grounding: Grounding | None = None  # the sources of a grounded chat


def short_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)[:80]


def _number(body: dict, key: str, default: float | int | None, integer: bool = False
            ) -> float | int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise APIError(400, f"{key} must be {kind}, got {short_json(value)}", key, "invalid_type")
    return value


def _same(value: object, neutral: object) -> bool:
    """Equal, without True passing for 1 (n=true is an error, not n=1)."""
    if isinstance(value, bool) or isinstance(neutral, bool):
        return value is neutral
    return value == neutral


def _check_range(ok: bool, key: str, rule: str, value: object) -> None:
    if not ok:
        raise APIError(400, f"{key} must be {rule}, got {short_json(value)}", key, "invalid_value")


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)
            or len(stops) > MAX_STOP_STRINGS):
        raise APIError(400, f"stop must be a non-empty string or a list of at most "
                       f"{MAX_STOP_STRINGS} non-empty strings, got {short_json(stop)}", "stop",
                       "invalid_value")
    return stops


def _common(body: dict, allowed: set[str], served: ServedModel) -> tuple[dict, bool, bool]:
    """Checks what completions and chat share; returns (sampling kwargs, stream, usage)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise APIError(400, f"unrecognized request argument(s): {', '.join(unknown)}",
                       unknown[0], "unknown_parameter")
    model = body.get("model")
    if model is not None and model != served.name:
        raise APIError(404, f"the model {short_json(model)} does not exist; this server serves "
                       f"{short_json(served.name)}", "model", "model_not_found")
    for key, neutral in _NEUTRAL.items():
        value = body.get(key)
        if value is not None and not any(_same(value, v) for v in neutral):
            raise APIError(400, f"{key}={short_json(value)} is not supported by this server (only "
                           f"{short_json(neutral[0])})", key, "unsupported_parameter")
    d = served.defaults
    temperature = _number(body, "temperature", d["temperature"])
    _check_range(0 <= temperature <= 2, "temperature", "between 0 and 2 (0 is greedy)",
                 temperature)
    top_p = _number(body, "top_p", d["top_p"])
    _check_range(0 < top_p <= 1, "top_p", "greater than 0 and at most 1", top_p)
    top_k = _number(body, "top_k", d["top_k"], integer=True)
    _check_range(top_k >= -1, "top_k", ">= 0 (0 or -1: no top-k filter)", top_k)
    seed = _number(body, "seed", None, integer=True)
    if seed is not None:  # what torch's generator takes
        _check_range(-2**63 <= seed < 2**64, "seed", "a 64-bit integer", seed)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise APIError(400, f"stream must be true or false, got {short_json(stream)}", "stream",
                       "invalid_type")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise APIError(400, "stream_options is only allowed when stream is true",
                           "stream_options", "invalid_value")
        if not isinstance(options, dict) or set(options) - {"include_usage"} or not isinstance(
                options.get("include_usage", False), bool):
            raise APIError(400, "stream_options must be {\"include_usage\": true|false}, got "
                           f"{short_json(options)}", "stream_options", "invalid_value")
        include_usage = options.get("include_usage", False)
    sampling = {"temperature": float(temperature), "top_p": float(top_p),
                "top_k": max(top_k, 0), "seed": seed, "stop": _stop(body)}
    return sampling, stream, include_usage


def _fit_context(served: ServedModel, prompt_ids: list[int], max_tokens: int | None,
                 param: str) -> int:
    """max_tokens, checked against the context; by default, the rest of the context."""
    context, n = served.max_seq_len, len(prompt_ids)
    if max_tokens is None:
        if n >= context:
            raise APIError(400, f"this model's maximum context length is {context} tokens, "
                           f"and the {param} alone is {n} tokens: no room for a completion",
                           param, "context_length_exceeded")
        return context - n
    _check_range(max_tokens >= 1, "max_tokens", ">= 1", max_tokens)
    if n + max_tokens > context:
        raise APIError(400, f"this model's maximum context length is {context} tokens; you "
                       f"requested {n + max_tokens} tokens ({n} in the {param}, {max_tokens} "
                       "for the completion): shorten the prompt or lower max_tokens", param,
                       "context_length_exceeded")
    return max_tokens


def parse_completion_request(body: dict, served: ServedModel) -> GenerationRequest:
    """A `/v1/completions` body, validated; raises APIError."""
    sampling, stream, include_usage = _common(body, _COMPLETION_FIELDS, served)
    if "prompt" not in body:
        raise APIError(400, "missing required parameter: prompt", "prompt", "missing_parameter")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # a batch of one
    vocab = served.tokenizer.get_vocab_size()
    if isinstance(prompt, str):
        prompt_ids = served.encode_prompt(prompt)
    elif (isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in prompt)):
        prompt_ids = list(prompt)  # token ids, used as they are
    else:
        raise APIError(400, "prompt must be a string, a list of one string or a non-empty list "
                       f"of token ids in [0, {vocab}) (batches are not supported), got "
                       f"{short_json(prompt)}", "prompt", "invalid_value")
    max_tokens = _number(body, "max_tokens", None, integer=True)
    sampling["max_tokens"] = _fit_context(served, prompt_ids, max_tokens, "prompt")
    return GenerationRequest(prompt_ids, Sampling(**sampling), stream, include_usage)


def _message(m: object, i: int) -> dict:
    if not isinstance(m, dict):
        raise APIError(400, f"messages[{i}] must be an object with role and content, got "
                       f"{short_json(m)}", f"messages[{i}]", "invalid_type")
    role, content = m.get("role"), m.get("content")
    role = "system" if role == "developer" else role  # OpenAI's newer name for system
    if role not in ROLES:
        raise APIError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}, got "
                       f"{short_json(role)}", f"messages[{i}].role", "invalid_value")
    if isinstance(content, list):  # content parts: text only
        if not all(isinstance(p, dict) and p.get("type") == "text"
                   and isinstance(p.get("text"), str) for p in content):
            raise APIError(400, f"messages[{i}].content: only text parts "
                           "({\"type\": \"text\", \"text\": ...}) are supported",
                           f"messages[{i}].content", "invalid_value")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise APIError(400, f"messages[{i}].content must be a string, got {short_json(content)}",
                       f"messages[{i}].content", "invalid_type")
    extra = set(m) - {"role", "content", "name"}
    if extra:
        raise APIError(400, f"messages[{i}]: unsupported field(s) {', '.join(sorted(extra))}",
                       f"messages[{i}]", "unknown_parameter")
    return {"role": role, "content": content}


def parse_chat_request(body: dict, served: ServedModel, ground: Grounder | None = None
                       ) -> GenerationRequest:
    """A `/v1/chat/completions` body, validated; raises APIError. `ground` grounds the chat
    in sources, whose quote constraint the sampling then carries."""
    sampling, stream, include_usage = _common(body, _CHAT_FIELDS, served)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content} objects, got "
                       f"{short_json(messages)}", "messages", "invalid_value")
    verbatim = body.get("verbatim_quotes", True)
    if not isinstance(verbatim, bool):
        raise APIError(400, f"verbatim_quotes must be true or false, got {short_json(verbatim)}",
                       "verbatim_quotes", "invalid_type")
    messages = [_message(m, i) for i, m in enumerate(messages)]
    grounding = None
    if ground is not None:
        try:
            grounding = ground(messages, verbatim)
        except QuestionError as e:
            raise APIError(400, str(e), "messages", "invalid_question") from None
    prefill: list[int] = []
    if grounding is not None:
        messages = grounding.messages
        sampling["constraint"] = grounding.constraint
        try:
            prefill = grounding.prefill(served.tokenizer)
        except ValueError as e:  # the server's answer prefix against these sources
            raise APIError(500, f"the server's answer prefix {grounding.prefix!r} is not a "
                           f"valid start of an answer citing these sources: {e}", None,
                           "bad_answer_prefix", "server_error") from None
    prompt_ids = served.encode_chat(messages) + prefill
    max_tokens = _number(body, "max_completion_tokens", None, integer=True)
    max_tokens = _number(body, "max_tokens", max_tokens, integer=True)
    sampling["max_tokens"] = _fit_context(served, prompt_ids, max_tokens, "messages")
    constraint = sampling.get("constraint")
    if constraint is not None and constraint.in_ref and (
            sampling["max_tokens"] < constraint.open_margin):  # room for an id, `">`, a close
        raise APIError(400, f"max_tokens={sampling['max_tokens']} leaves no room to finish the "
                       f"quote the answer prefix {grounding.prefix!r} opens (at least "
                       f"{constraint.open_margin})", "max_tokens", "invalid_value")
    return GenerationRequest(prompt_ids, Sampling(**sampling), stream, include_usage,
                             grounding)
