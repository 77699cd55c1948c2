"""`fournil serve`: an OpenAI-compatible HTTP server (Starlette on uvicorn).

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/completions`,
`POST /v1/chat/completions` (both with `"stream": true` as server-sent events ending with
`data: [DONE]`), and `GET /health`. Requests and responses follow OpenAI's schemas, so the
`openai` client and the tools built on it work unchanged; `top_k` is an extension (as in
vLLM). Sampling defaults come from the export's generation_config.json.

Every request is checked before any work is done: bad JSON, unknown or mistyped fields,
unknown roles, out-of-range values and prompts that do not fit the context get a 400 with
an OpenAI-style body `{"error": {"message", "type", "param", "code"}}` that names the field
and the numbers; an unknown model is a 404. Parameters OpenAI has but fournil does not
implement (n > 1, penalties, logprobs, ...) are accepted at their neutral value only.

Concurrency is bounded: at most `max_concurrency` generations run at once, each in a worker
thread so the event loop keeps answering; up to `max_queue` more requests wait for a slot
(as long as it takes, in arrival order), and a request beyond that gets a 429 at once with a
`Retry-After` header, rather than queueing unboundedly. A client that disconnects, streaming
or not, stops its generation at the next token and frees its slot.

What one client can make the server hold is bounded too, so that malformed, oversized or
slow requests cost a rejection and never the server (`bench/serve_abuse.py` sends a
thousand such requests and measures this):

- `max_body_bytes` (default 1 MiB, far above any prompt that fits a small model's context):
  a larger body gets a 413, from its Content-Length before any of it is read, or, for a
  chunked body with no length, as soon as the bytes read pass the limit; the server never
  holds more than the limit.
- `body_timeout_s` (default 20 s: 1 MiB at 0.4 Mbit/s): a body that has not arrived whole
  within this time after the request's head gets a 408, so a client trickling its body
  cannot hold a connection forever. 413 and 408 close the connection (the rest of the body
  was never read).
- `head_timeout_s` (default 10 s, `fournil.serve.protocol`): a connection whose request head
  is not complete in time is closed; a head over 16 KiB gets a 400 (h11's limit).

Text that is not Unicode (a lone UTF-16 surrogate escape such as `"\\ud800"`) and JSON
nested too deeply to parse get a 400 like any other invalid body.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fournil.core.cores import available_cores
from fournil.formats.chatml import ROLES
from fournil.serve.engine import Completion, Sampling, ServedModel, load_served
from fournil.serve.protocol import HEAD_TIMEOUT_S, with_head_timeout

log = logging.getLogger("fournil.serve")

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
_CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens", "top_logprobs"}


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


# --- reading the body -----------------------------------------------------------------------

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
        raise APIError(400, f"the request body must be a JSON object, got {_json(body)}",
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


# --- request validation ---------------------------------------------------------------------

@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    sampling: Sampling
    stream: bool
    include_usage: bool


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)[:80]


def _number(body: dict, key: str, default: float | int | None, integer: bool = False
            ) -> float | int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise APIError(400, f"{key} must be {kind}, got {_json(value)}", key, "invalid_type")
    return value


def _same(value: object, neutral: object) -> bool:
    """Equal, without True passing for 1 (n=true is an error, not n=1)."""
    if isinstance(value, bool) or isinstance(neutral, bool):
        return value is neutral
    return value == neutral


def _check_range(ok: bool, key: str, rule: str, value: object) -> None:
    if not ok:
        raise APIError(400, f"{key} must be {rule}, got {_json(value)}", key, "invalid_value")


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)
            or len(stops) > MAX_STOP_STRINGS):
        raise APIError(400, f"stop must be a non-empty string or a list of at most "
                       f"{MAX_STOP_STRINGS} non-empty strings, got {_json(stop)}", "stop",
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
        raise APIError(404, f"the model {_json(model)} does not exist; this server serves "
                       f"{_json(served.name)}", "model", "model_not_found")
    for key, neutral in _NEUTRAL.items():
        value = body.get(key)
        if value is not None and not any(_same(value, v) for v in neutral):
            raise APIError(400, f"{key}={_json(value)} is not supported by this server (only "
                           f"{_json(neutral[0])})", key, "unsupported_parameter")
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
        raise APIError(400, f"stream must be true or false, got {_json(stream)}", "stream",
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
                           f"{_json(options)}", "stream_options", "invalid_value")
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
                       f"{_json(prompt)}", "prompt", "invalid_value")
    max_tokens = _number(body, "max_tokens", None, integer=True)
    sampling["max_tokens"] = _fit_context(served, prompt_ids, max_tokens, "prompt")
    return GenerationRequest(prompt_ids, Sampling(**sampling), stream, include_usage)


def _message(m: object, i: int) -> dict:
    if not isinstance(m, dict):
        raise APIError(400, f"messages[{i}] must be an object with role and content, got "
                       f"{_json(m)}", f"messages[{i}]", "invalid_type")
    role, content = m.get("role"), m.get("content")
    role = "system" if role == "developer" else role  # OpenAI's newer name for system
    if role not in ROLES:
        raise APIError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}, got "
                       f"{_json(role)}", f"messages[{i}].role", "invalid_value")
    if isinstance(content, list):  # content parts: text only
        if not all(isinstance(p, dict) and p.get("type") == "text"
                   and isinstance(p.get("text"), str) for p in content):
            raise APIError(400, f"messages[{i}].content: only text parts "
                           "({\"type\": \"text\", \"text\": ...}) are supported",
                           f"messages[{i}].content", "invalid_value")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise APIError(400, f"messages[{i}].content must be a string, got {_json(content)}",
                       f"messages[{i}].content", "invalid_type")
    extra = set(m) - {"role", "content", "name"}
    if extra:
        raise APIError(400, f"messages[{i}]: unsupported field(s) {', '.join(sorted(extra))}",
                       f"messages[{i}]", "unknown_parameter")
    return {"role": role, "content": content}


def parse_chat_request(body: dict, served: ServedModel) -> GenerationRequest:
    """A `/v1/chat/completions` body, validated; raises APIError."""
    sampling, stream, include_usage = _common(body, _CHAT_FIELDS, served)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content} objects, got "
                       f"{_json(messages)}", "messages", "invalid_value")
    prompt_ids = served.encode_chat([_message(m, i) for i, m in enumerate(messages)])
    max_tokens = _number(body, "max_completion_tokens", None, integer=True)
    max_tokens = _number(body, "max_tokens", max_tokens, integer=True)
    sampling["max_tokens"] = _fit_context(served, prompt_ids, max_tokens, "messages")
    return GenerationRequest(prompt_ids, Sampling(**sampling), stream, include_usage)


# --- bounded concurrency --------------------------------------------------------------------

class Limiter:
    """At most `max_concurrency` generations at once, `max_queue` more waiting; beyond, 429.
    Acquired on the event loop; released (also on the loop) when the worker thread ends,
    not when the client leaves, so a slot is never shared by two running generations."""

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError(f"max_concurrency must be >= 1 and max_queue >= 0, got "
                             f"{max_concurrency} and {max_queue}")
        self.max_concurrency, self.max_queue = max_concurrency, max_queue
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.active = self.waiting = self.peak_active = self.rejected = 0

    async def acquire(self) -> None:
        if self.active + self.waiting >= self.max_concurrency + self.max_queue:
            self.rejected += 1
            raise APIError(429, f"the server is busy: {self.active} generations running and "
                           f"{self.waiting} waiting (limits {self.max_concurrency} and "
                           f"{self.max_queue}); retry later", None, "too_many_requests",
                           "rate_limit_error")
        self.waiting += 1
        try:
            await self.semaphore.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)

    def release(self) -> None:
        self.active -= 1
        self.semaphore.release()


_END = object()


class Generations:
    """Runs completions on worker threads and hands their pieces to the event loop."""

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.limiter = Limiter(max_concurrency, max_queue)
        self.pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="fournil-generate")
        self.running: set[Completion] = set()
        self.cancelled = 0  # generations stopped because their client left

    async def start(self, completion: Completion, stream: bool) -> asyncio.Queue:
        """Waits for a slot (or raises the 429), then starts the generation; its pieces, then
        `_END` or the exception it raised, arrive on the returned queue. Without `stream`
        the text arrives as one piece: waking the event loop for every token would cost
        more than the token on a small model."""
        await self.limiter.acquire()
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        self.running.add(completion)

        def finished() -> None:
            self.running.discard(completion)
            self.cancelled += completion.finish_reason == "cancelled"
            self.limiter.release()

        def work() -> None:
            end: object = _END
            try:
                if stream:
                    for piece in completion:
                        loop.call_soon_threadsafe(queue.put_nowait, piece)
                else:
                    loop.call_soon_threadsafe(queue.put_nowait, completion.text())
            except Exception as e:  # reported to the client; the server goes on
                log.exception("generation failed")
                end = e
            with contextlib.suppress(RuntimeError):  # the loop is closed: server shut down
                loop.call_soon_threadsafe(queue.put_nowait, end)
                loop.call_soon_threadsafe(finished)

        self.pool.submit(work)
        return queue

    def stop_all(self) -> None:
        for completion in list(self.running):
            completion.cancel.set()
        self.pool.shutdown(wait=False)


async def _pieces(queue: asyncio.Queue) -> AsyncIterator[str]:
    while (item := await queue.get()) is not _END:
        if isinstance(item, BaseException):
            raise APIError(500, f"generation failed: {item}", None, "generation_failed",
                           "server_error") from item
        yield item


# --- responses ------------------------------------------------------------------------------

def _usage(c: Completion) -> dict:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens}


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class _Kind:
    """What differs between /v1/completions and /v1/chat/completions responses."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.prefix = "chatcmpl" if chat else "cmpl"
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"

    def choice(self, text: str, finish_reason: str | None) -> dict:
        if self.chat:
            return {"index": 0, "message": {"role": "assistant", "content": text},
                    "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}

    def delta(self, delta: dict, finish_reason: str | None) -> dict:
        if self.chat:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": delta.get("content", ""), "logprobs": None,
                "finish_reason": finish_reason}


async def _cancel_when_client_leaves(request: Request, completion: Completion) -> None:
    """Waits for the client to disconnect, then stops its generation. Only once the body is
    read: after it, the next ASGI message is the disconnect (or the end of our response)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    completion.cancel.set()


def create_app(served: ServedModel, max_concurrency: int = 1, max_queue: int = 16,
               max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = BODY_TIMEOUT_S
               ) -> Starlette:
    """The ASGI app serving `served`. `app.state.generations` holds the limiter and counters
    (active, waiting, peak_active, rejected, cancelled). A request body over `max_body_bytes`
    gets a 413, one not read whole within `body_timeout_s` a 408 (see the module's doc)."""
    if max_body_bytes < 1 or not body_timeout_s > 0:
        raise ValueError(f"max_body_bytes must be >= 1 and body_timeout_s > 0, got "
                         f"{max_body_bytes} and {body_timeout_s}")
    generations = Generations(max_concurrency, max_queue)

    async def generate(request: Request, kind: _Kind) -> Response:
        try:
            try:
                raw = await read_body(request, max_body_bytes, body_timeout_s)
            except ClientDisconnect:  # gone mid-body: nobody will read an answer
                return Response(status_code=400)
            body = parse_json_body(raw)
            parse = parse_chat_request if kind.chat else parse_completion_request
            req = parse(body, served)
            completion = served.complete(req.prompt_ids, req.sampling)
            queue = await generations.start(completion, req.stream)
        except APIError as e:
            return e.response()
        if await request.is_disconnected():  # gave up while waiting for a slot
            completion.cancel.set()
        rid, created = f"{kind.prefix}-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": kind.object, "created": created, "model": served.name}
        if not req.stream:
            watcher = asyncio.create_task(_cancel_when_client_leaves(request, completion))
            try:
                text = "".join([piece async for piece in _pieces(queue)])
            except APIError as e:
                return e.response()
            finally:
                watcher.cancel()
                completion.cancel.set()  # a no-op once done; stops it if this task is torn down
            return JSONResponse({**head, "choices": [kind.choice(text, completion.finish_reason)],
                                 "usage": _usage(completion)})
        chunk = {**head, "object": kind.chunk_object}

        async def events() -> AsyncIterator[str]:
            try:
                if kind.chat:
                    yield _sse({**chunk, "choices": [kind.delta({"role": "assistant",
                                                                 "content": ""}, None)]})
                async for piece in _pieces(queue):
                    yield _sse({**chunk, "choices": [kind.delta({"content": piece}, None)]})
                yield _sse({**chunk, "choices": [kind.delta({}, completion.finish_reason)]})
                if req.include_usage:
                    yield _sse({**chunk, "choices": [], "usage": _usage(completion)})
            except APIError as e:  # headers are sent: the error travels as an event
                yield _sse(e.body())
            finally:
                completion.cancel.set()  # the client left (or we are done): stop generating
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def completions(request: Request) -> Response:
        return await generate(request, _Kind(chat=False))

    async def chat_completions(request: Request) -> Response:
        return await generate(request, _Kind(chat=True))

    def model_card() -> dict:
        return {"id": served.name, "object": "model", "created": served.created,
                "owned_by": "fournil", "max_model_len": served.max_seq_len}

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        if name != served.name:
            return APIError(404, f"the model {_json(name)} does not exist; this server serves "
                            f"{_json(served.name)}", "model", "model_not_found").response()
        return JSONResponse(model_card())

    async def health(request: Request) -> Response:
        lim = generations.limiter
        return JSONResponse({"status": "ok", "model": served.name, "active": lim.active,
                             "waiting": lim.waiting, "rejected": lim.rejected,
                             "cancelled": generations.cancelled})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else "method_not_allowed"
        return APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                        None, code).response()

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("error serving %s %s", request.method, request.url.path, exc_info=exc)
        return APIError(500, f"internal error: {exc}", None, "internal_error",
                        "server_error").response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        generations.stop_all()

    app = Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ], exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan)
    app.state.generations = generations
    app.state.served = served
    return app


# --- running it -----------------------------------------------------------------------------

def _warn_if_exposed(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = False
    if not loopback:
        log.warning("listening on %s: anyone who can reach this machine can use the model "
                    "(there is no authentication); the default is 127.0.0.1", host)


def cpu_threads(max_concurrency: int, threads: int | None = None) -> int:
    """Intra-op threads for CPU generation: the cores this process may use (its CPU
    affinity, not the host's count) shared out between the generations that run at once.
    Oversubscribing costs a lot: on a busy 2-core machine, a token of the smoke model took
    5-8x longer with 2 threads than with 1 (`--threads` overrides)."""
    return threads or max(1, available_cores() // max_concurrency)


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_concurrency: int = 1, max_queue: int = 16, model_name: str | None = None,
          device: str = "cpu", threads: int | None = None,
          max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = BODY_TIMEOUT_S,
          head_timeout_s: float = HEAD_TIMEOUT_S) -> None:
    """Loads the model (a fournil export or checkpoint, any transformers causal LM folder
    with a chat template, or a .gguf file) and serves it until interrupted."""
    torch.set_num_threads(cpu_threads(max_concurrency, threads))
    served = load_served(model_dir, name=model_name, device=device)
    app = create_app(served, max_concurrency, max_queue, max_body_bytes, body_timeout_s)
    _warn_if_exposed(host)
    log.info("serving %s (%s, context %d) on http://%s:%d/v1", served.name, model_dir,
             served.max_seq_len, host, port)
    # h11 with a deadline on request heads (fournil.serve.protocol)
    uvicorn.run(app, host=host, port=port, http=with_head_timeout(head_timeout_s),
                log_level="info", timeout_graceful_shutdown=5)


@contextlib.contextmanager
def running_server(app: Starlette, host: str = "127.0.0.1", port: int = 0,
                   head_timeout_s: float = HEAD_TIMEOUT_S) -> Iterator[str]:
    """Serves `app` from a background thread (port 0: a free one) and yields its base URL,
    e.g. `http://127.0.0.1:54321/v1`; stops the server on exit. For tests, benches and
    notebooks; configured as `fournil serve` is."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, http=with_head_timeout(head_timeout_s),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread died before it started")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
