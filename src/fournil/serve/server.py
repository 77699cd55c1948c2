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

Answers from sources (`fournil.serve.rag`). With `--index DIR` (a `fournil index` folder),
the last user message of a chat completion is a question answered from the index, as
`fournil ask` answers it: its top passages go into the prompt in the synth RAG task's format,
or, when they hold too little of the question, the answer is a refusal without the model.
Without an index, a chat whose last user message holds `<source id="N">` blocks is grounded
in those. A grounded chat's quotes (`<ref name="N">…</ref>`) are constrained to be verbatim
in source N while they are written; `"verbatim_quotes": false` in the request turns that off.
The response then carries an extra field (the final chunk when streaming, and the first one
with the sources only, so a page can show them while the answer streams):

    "fournil": {"sources": [{"ref": "1", "passage": passage id, "id": document id, "title",
                             "author", "date", "source", "license", "url", "start", "end",
                             "text", "score"}, ...],
                "citations": [{"ref": "1", "quote", "verbatim", "start", "end", "id",
                               "passage", "title", "license", ...}, ...],
                "refused": bool, "reason": null | "nothing_relevant" | "no_citation" |
                           "sources_do_not_answer",
                "relevance": float, "verbatim_quotes": bool}

`start`/`end`: a source's passage offsets in its document; a citation's quote offsets in the
document (in the source's text when the client wrote it, null when not verbatim). A client's
sources are `{"ref", "text"}`. `POST /v1/ask` (`fournil.serve.ask`) takes `{"question"}` and
returns `fournil ask --json`'s object (`answer`, `sources`, `refused`, ...). `GET /` is a
page to ask the index from a browser (`page.html`: the answer streamed, each quote
highlighted and linked to its passage, with the document's title and license).
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
from pathlib import Path

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fournil.core.cores import available_cores
from fournil.serve.ask import AskJob, parse_ask_request
from fournil.serve.concurrency import Generations, pieces
from fournil.serve.engine import Completion, ServedModel, load_served
from fournil.serve.protocol import HEAD_TIMEOUT_S, with_head_timeout
from fournil.serve.rag import DEFAULT_K, Grounder, Quoting, Refusal, ServedIndex
from fournil.serve.requests import (
    BODY_TIMEOUT_S,
    MAX_BODY_BYTES,
    APIError,
    GenerationRequest,
    parse_chat_request,
    parse_completion_request,
    parse_json_body,
    read_body,
    short_json,
)

log = logging.getLogger("fournil.serve")
PAGE = Path(__file__).with_name("page.html")  # GET /: asking the index from a browser


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
               max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = BODY_TIMEOUT_S,
               index: ServedIndex | None = None, answer_prefix: str = "") -> Starlette:
    """The ASGI app serving `served`. `app.state.generations` holds the limiter and counters
    (active, waiting, peak_active, rejected, cancelled). A request body over `max_body_bytes`
    gets a 413, one not read whole within `body_timeout_s` a 408 (see the module's doc).
    With `index`, chat completions are answered from it and `/v1/ask` answers questions;
    `answer_prefix` starts every grounded answer (`fournil.serve.rag`)."""
    if max_body_bytes < 1 or not body_timeout_s > 0:
        raise ValueError(f"max_body_bytes must be >= 1 and body_timeout_s > 0, got "
                         f"{max_body_bytes} and {body_timeout_s}")
    generations = Generations(max_concurrency, max_queue)
    quoting = Quoting(served.tokenizer)
    if index is not None:  # every chat will be grounded: the token trie now, not in the
        quoting.trie()  # first request's time (~0.3 s for 49k tokens)
    page = PAGE.read_bytes()

    ground = Grounder(quoting, index, answer_prefix)

    def start(req: GenerationRequest) -> Completion | Refusal:
        g = req.grounding
        if g is not None and g.refusal:  # nothing relevant retrieved: the model is not asked
            return Refusal(g.refusal, len(req.prompt_ids))
        return served.complete(req.prompt_ids, req.sampling)

    async def generate(request: Request, kind: _Kind) -> Response:
        try:
            try:
                raw = await read_body(request, max_body_bytes, body_timeout_s)
            except ClientDisconnect:  # gone mid-body: nobody will read an answer
                return Response(status_code=400)
            body = parse_json_body(raw)
            if kind.chat:
                req = parse_chat_request(body, served, ground)
            else:
                req = parse_completion_request(body, served)
            completion = start(req)
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
                text = "".join([piece async for piece in pieces(queue)])
            except APIError as e:
                return e.response()
            finally:
                watcher.cancel()
                completion.cancel.set()  # a no-op once done; stops it if this task is torn down
            grounded = {}
            if req.grounding is not None:
                grounded = {"fournil": req.grounding.report(text)}
                text = req.grounding.prefix + text
            return JSONResponse({**head, "choices": [kind.choice(text, completion.finish_reason)],
                                 "usage": _usage(completion), **grounded})
        chunk = {**head, "object": kind.chunk_object}

        async def events() -> AsyncIterator[str]:
            g, written = req.grounding, []
            try:
                if kind.chat:
                    sources = {} if g is None else {"fournil": g.report(None)}
                    yield _sse({**chunk, "choices": [kind.delta({"role": "assistant",
                                                                 "content": ""}, None)],
                                **sources})
                    if g is not None and g.prefix:  # the answer's start, as if generated
                        yield _sse({**chunk, "choices": [kind.delta({"content": g.prefix},
                                                                    None)]})
                async for piece in pieces(queue):
                    written.append(piece)
                    yield _sse({**chunk, "choices": [kind.delta({"content": piece}, None)]})
                report = {} if g is None else {"fournil": g.report("".join(written))}
                yield _sse({**chunk, "choices": [kind.delta({}, completion.finish_reason)],
                            **report})
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

    async def ask(request: Request) -> Response:
        if index is None:
            return APIError(404, "this server has no passage index: start it with "
                            "`fournil serve --index DIR`", None, "no_index").response()
        try:
            try:
                raw = await read_body(request, max_body_bytes, body_timeout_s)
            except ClientDisconnect:
                return Response(status_code=400)
            job = AskJob(parse_ask_request(parse_json_body(raw)), index, served, quoting,
                         answer_prefix)
            queue = await generations.start(job, stream=False)  # type: ignore[arg-type]
        except APIError as e:
            return e.response()
        watcher = asyncio.create_task(_cancel_when_client_leaves(request, job))  # type: ignore[arg-type]
        try:
            async for _ in pieces(queue):  # the answer's text; the job holds all of it
                pass
        except APIError as e:
            return e.response()
        finally:
            watcher.cancel()
            job.cancel.set()
        if job.error is not None:
            return APIError(400, str(job.error), "question", "invalid_question").response()
        assert job.result is not None
        return JSONResponse(job.result.to_dict())

    async def home(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

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
            return APIError(404, f"the model {short_json(name)} does not exist; this server serves "
                            f"{short_json(served.name)}", "model", "model_not_found").response()
        return JSONResponse(model_card())

    async def health(request: Request) -> Response:
        lim = generations.limiter
        return JSONResponse({"status": "ok", "model": served.name, "active": lim.active,
                             "waiting": lim.waiting, "rejected": lim.rejected,
                             "cancelled": generations.cancelled,
                             "index": None if index is None else str(index.folder)})

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
        Route("/v1/ask", ask, methods=["POST"]),
        Route("/", home, methods=["GET"]),
    ], exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan)
    app.state.generations = generations
    app.state.served = served
    app.state.index = index
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
          head_timeout_s: float = HEAD_TIMEOUT_S, index_dir: str | Path | None = None,
          passages: int = DEFAULT_K, answer_prefix: str = "") -> None:
    """Loads the model (a fournil export or checkpoint, any transformers causal LM folder
    with a chat template, or a .gguf file) and serves it until interrupted; with
    `index_dir`, answers from that passage index (checked before the model is loaded),
    showing the model `passages` of them, each answer starting with `answer_prefix`."""
    index = None if index_dir is None else ServedIndex(index_dir, k=passages)
    torch.set_num_threads(cpu_threads(max_concurrency, threads))
    served = load_served(model_dir, name=model_name, device=device)
    app = create_app(served, max_concurrency, max_queue, max_body_bytes, body_timeout_s, index,
                     answer_prefix)
    _warn_if_exposed(host)
    log.info("serving %s (%s, context %d) on http://%s:%d/v1", served.name, model_dir,
             served.max_seq_len, host, port)
    if index is not None:
        log.info("answering from the passage index %s (%d passages); ask it at http://%s:%d/",
                 index.folder, len(index.retriever.passages), host, port)
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
