"""`fournil serve` under abuse: a thousand hostile or broken requests from 127.0.0.1, then one
good request, which must get the right answer from a server that leaked nothing.

    python bench/serve_abuse.py                          # bakes recipes/smoke.toml first (~1-3 min)
    python bench/serve_abuse.py --model runs/smoke/export

The server is `fournil serve` in its own process, as a user starts it (default limits, one
generation at a time, `--threads 1`). Clients are raw asyncio sockets, at most
`--concurrency` (32) at once, so every byte on the wire is the bench's choice: malformed and
deeply nested JSON, text that is not Unicode, bodies over the size limit (with a
Content-Length, and chunked with none, sent as fast as the socket takes them), huge
`max_tokens`, bad roles, wrong types, extreme but valid sampling values, a head over h11's
16 KiB, clients that trickle their body or their head one byte at a time (or send nothing),
clients that leave a streamed or a non-streamed generation, and a flood of good requests
against the queue limit (429 with Retry-After). A client waits at most `--bound` seconds.

Every request must end in a 4xx/429 (or a 200 where the request is valid), or the server
closing the connection, or the client leaving on purpose; never a 5xx nor the bound.
Afterwards `/health` must show no generation running or waiting (no leaked slot), and a
greedy completion must equal the one computed in this process. Printed: requests and status
codes by kind, p50/p99 latency of the rejections, the longest time the server took to close
on a slow client, how soon the slots were free after the last client left, the server's
peak RSS (VmHWM) before and after, and the good request's result.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from fournil.serve.engine import Sampling, load_served

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Il était une fois"
HEAD_SIZE_LIMIT = 16 * 1024  # h11's default incomplete-event size, which uvicorn keeps


@dataclass
class Outcome:
    """How one request ended: `status` if a response came, else how the connection ended
    ("closed" by the server, "reset" by the server, "left" by this client on purpose,
    "timeout" if nothing happened within the bound: a failure)."""

    kind: str
    status: int | None
    end: str  # "response", "closed", "reset", "left", "timeout"
    seconds: float
    error_shape: bool | None = None  # an OpenAI-style error body, for JSON 4xx/5xx
    retry_after: bool | None = None  # a Retry-After header, for 429

    @property
    def label(self) -> str:
        if self.status is None:
            return self.end
        return f"{self.status} then left" if self.end == "left" else str(self.status)

    @property
    def ok(self) -> bool:
        """A 4xx/429, a 200 to a valid request, a close or a deliberate leave: not a 5xx,
        not a hang."""
        if self.status is not None:
            return self.status < 500
        return self.end in ("closed", "reset", "left")


# --- a raw HTTP/1.1 client ------------------------------------------------------------------

def head_bytes(path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_bytes(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    return head_bytes(path, {"Content-Type": content_type,
                             "Content-Length": str(len(body))}) + body


async def read_response(reader: asyncio.StreamReader, first_event: bool = False
                        ) -> tuple[int | None, dict[str, str], bytes]:
    """(status, headers, body) of the response; status None if the connection closed before
    one. With `first_event`, stops after the first server-sent event's line."""
    status_line = await reader.readline()
    if not status_line:
        return None, {}, b""
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if first_event and status == 200:
        while (line := await reader.readline()) and b"data:" not in line:
            pass
        return status, headers, line
    return status, headers, await reader.read(1 << 20)


def _error_shape(headers: dict[str, str], body: bytes) -> bool | None:
    if not headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}


async def exchange(port: int, kind: str, parts: Iterable[bytes], bound_s: float,
                   gap_s: float = 0.0, first_event: bool = False,
                   leave_after_s: float | None = None) -> Outcome:
    """Sends `parts` (with `gap_s` between them) while reading the response; the writer stops
    when the response or the close comes. `first_event`: leave (close) once the first
    streamed event arrives; `leave_after_s`: leave after that long, whatever came."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if gap_s:
                await asyncio.sleep(gap_s)

    sending = asyncio.create_task(send())
    outcome = Outcome(kind, None, "timeout", bound_s)
    try:
        receiving = read_response(reader, first_event)
        if leave_after_s is not None:
            try:
                status, headers, body = await asyncio.wait_for(receiving, leave_after_s)
            except asyncio.TimeoutError:
                outcome = Outcome(kind, None, "left", time.perf_counter() - start)
                return outcome
        else:
            status, headers, body = await asyncio.wait_for(receiving, bound_s)
        seconds = time.perf_counter() - start
        if status is None:
            outcome = Outcome(kind, None, "closed", seconds)
        else:
            end = "left" if first_event and status == 200 else "response"
            outcome = Outcome(kind, status, end, seconds,
                              _error_shape(headers, body) if status >= 400 else None,
                              "retry-after" in headers if status == 429 else None)
    except (ConnectionResetError, BrokenPipeError):
        outcome = Outcome(kind, None, "reset", time.perf_counter() - start)
    except asyncio.TimeoutError:
        pass
    finally:
        sending.cancel()
        if outcome.end == "left":
            writer.transport.abort()  # an abrupt leave, as a killed client or a dropped link
        else:
            writer.close()
        await asyncio.gather(sending, return_exceptions=True)
    return outcome


# --- the abusive requests -------------------------------------------------------------------

def _chat(**extra: object) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "Bonjour"}], **extra}).encode()


def _completion(**extra: object) -> bytes:
    return json.dumps({"prompt": PROMPT, **extra}).encode()


MALFORMED = [b'{"prompt": "x",', b"", b"not json", b'{"prompt": "x"} trailing',
             b"\xff\xfe\x00garbage", b"\xc3\x28", b"[1, 2]", b'"a string"', b"null",
             b'{"prompt": NaN}', b'{"prompt": "x", "max_tokens": 1e999}',
             b'{"prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}", b"{" * 1000]
DEEP = [b"[" * 500_000, b'{"a":' * 100_000, b"[" * 20_000 + b"]" * 20_000,
        b'{"prompt": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"]
NOT_UNICODE = [b'{"prompt": "\\ud800 lone"}', b'{"prompt": "x \\udfff"}',
               b'{"messages": [{"role": "user", "content": "\\ud83d"}]}',
               b'{"model": "\\ud800", "prompt": "x"}', b'{"\\ud800": 1, "prompt": "x"}',
               b'{"prompt": "\xed\xa0\x80 encoded surrogate"}',
               b'{"prompt": "x", "stop": ["\\udc00"]}']
HUGE_MAX_TOKENS = [_completion(max_tokens=10**9), _completion(max_tokens=2**63),
                   _completion(max_tokens=int("9" * 4000)), _completion(max_tokens=-1),
                   _completion(max_tokens=0), _chat(max_tokens=10**12),
                   _chat(max_completion_tokens=2**64)]
BAD_ROLES = [json.dumps({"messages": [{"role": role, "content": "x"}]}).encode()
             for role in ("wizard", "", None, 5, "SYSTEM", "tool", "function", ["user"])]
WRONG_TYPES = [_completion(temperature="hot"), _completion(stream="yes"),
               _completion(max_tokens=1.5), _completion(top_k=1.5), _completion(seed="x"),
               _completion(stop=5), _completion(stop=["a"] * 5), _completion(stop=[""]),
               _completion(n=2), _completion(logprobs=True), _completion(stream_options={}),
               _completion(model=5), _completion(best_effort=True),
               *(json.dumps({"prompt": p}).encode()
                 for p in ({}, 5, True, [1.5], [-1], [10**9], [], ["a", "b"])),
               *(json.dumps({"messages": m}).encode()
                 for m in ("hi", {}, [[]], [{"role": "user", "content": 5}],
                           [{"role": "user"}], [{"role": "user", "content": "x", "x": 1}],
                           [{"role": "user", "content": [{"type": "image_url"}]}]))]
EXTREME_SAMPLING = [_completion(max_tokens=4, temperature=1e-300),
                    _completion(max_tokens=4, temperature=1e-40),
                    _completion(max_tokens=4, temperature=2, top_p=1e-300),
                    _completion(max_tokens=4, top_k=10**18, top_p=1e-45),
                    _completion(max_tokens=4, seed=-2**63, temperature=2)]


def pieces(data: bytes | memoryview, size: int = 1 << 16) -> Iterator[bytes | memoryview]:
    """`data` in slices, made as the socket takes them (32 clients' bodies of several MiB
    must not all sit in this process at once)."""
    view = memoryview(data)
    for i in range(0, len(view), size):
        yield view[i:i + size]


def chunked(data: bytes | memoryview, size: int = 1 << 16) -> Iterator[bytes]:
    """`data` in HTTP/1.1 chunked framing, ending with the last (empty) chunk."""
    for piece in pieces(data, size):
        yield b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n"
    yield b"0\r\n\r\n"


@functools.cache
def spaces(n: int) -> bytes:
    return b" " * n


@dataclass
class Limits:
    """The server's limits, which the abuse is sized from."""

    max_body_bytes: int
    body_timeout_s: float
    head_timeout_s: float
    bound_s: float  # how long a client waits for anything at all


Client = Callable[[int, int, Limits], Awaitable[Outcome]]


def _one_of(kind: str, bodies: list[bytes], path: str = "/v1/completions") -> Client:
    """Sends the i-th body of the list (round robin), whole, at once."""
    def client(port: int, i: int, lim: Limits) -> Awaitable[Outcome]:
        body = bodies[i % len(bodies)]
        where = "/v1/chat/completions" if body.startswith(b'{"messages"') else path
        return exchange(port, kind, [post_bytes(where, body)], lim.bound_s)
    return client


def oversized_length(port: int, i: int, lim: Limits) -> Awaitable[Outcome]:
    """Declares twice the limit and starts sending it: refused from the header."""
    body = spaces(2 * lim.max_body_bytes)
    head = head_bytes("/v1/completions", {"Content-Type": "application/json",
                                          "Content-Length": str(len(body))})
    return exchange(port, "oversized_length", itertools.chain([head], pieces(body)),
                    lim.bound_s)


def oversized_chunked(port: int, i: int, lim: Limits) -> Awaitable[Outcome]:
    """Eight times the limit, chunked, no Content-Length, as fast as the socket takes it:
    the server must stop reading at the limit, not buffer the whole body first."""
    body = spaces(8 * lim.max_body_bytes)  # JSON whitespace: only its size is wrong
    head = head_bytes("/v1/completions", {"Content-Type": "application/json",
                                          "Transfer-Encoding": "chunked"})
    return exchange(port, "oversized_chunked", itertools.chain([head], chunked(body)),
                    lim.bound_s)


def huge_header(port: int, i: int, lim: Limits) -> Awaitable[Outcome]:
    head = head_bytes("/v1/completions", {"X-Pad": "a" * (4 * HEAD_SIZE_LIMIT),
                                          "Content-Length": "2"})
    return exchange(port, "huge_header", [head + b"{}"], lim.bound_s)


def slow_body(port: int, i: int, lim: Limits) -> Awaitable[Outcome]:
    """A valid request whose body comes one byte at a time, too slowly to finish before the
    body deadline (half of them chunked, half with a Content-Length)."""
    gap = 0.1
    body = _completion(max_tokens=4) + b" " * int(2 * lim.body_timeout_s / gap)
    if i % 2:
        head = head_bytes("/v1/completions", {"Content-Type": "application/json",
                                              "Transfer-Encoding": "chunked"})
        parts = [b"1\r\n%b\r\n" % body[k:k + 1] for k in range(len(body))]
    else:
        head = head_bytes("/v1/completions", {"Content-Type": "application/json",
                                              "Content-Length": str(len(body))})
        parts = [body[k:k + 1] for k in range(len(body))]
    return exchange(port, "slow_body", [head, *parts], lim.bound_s, gap_s=gap)


def slow_head(port: int, i: int, lim: Limits) -> Awaitable[Outcome]:
    """A head one byte at a time, too slowly to finish before the head deadline; every other
    client connects and sends nothing at all."""
    gap = 0.1
    head = head_bytes("/v1/completions", {"Content-Type": "application/json",
                                          "X-Pad": "a" * int(2 * lim.head_timeout_s / gap)})
    parts = [] if i % 2 else [head[k:k + 1] for k in range(len(head))]
    return exchange(port, "slow_head", parts, lim.bound_s, gap_s=gap)


def leave_stream(port: int, i: int, lim: Limits) -> Awaitable[Outcome]:
    """A streamed chat with no max_tokens (the whole context); leaves at the first event."""
    body = _chat(stream=True, temperature=0)
    return exchange(port, "leave_stream", [post_bytes("/v1/chat/completions", body)],
                    lim.bound_s, first_event=True)


def leave_waiting(port: int, i: int, lim: Limits) -> Awaitable[Outcome]:
    """A non-streamed completion over the whole context; leaves before the answer."""
    return exchange(port, "leave_waiting", [post_bytes("/v1/completions", _completion())],
                    lim.bound_s, leave_after_s=0.05 + 0.05 * (i % 4))


def flood(port: int, i: int, lim: Limits) -> Awaitable[Outcome]:
    """Good requests, more at once than the generation slots and the queue hold."""
    body = _completion(max_tokens=16, temperature=0.8, seed=i)
    return exchange(port, "flood", [post_bytes("/v1/completions", body)], lim.bound_s)


# kind -> (client, requests in the default mix of 1,000)
KINDS: dict[str, tuple[Client, int]] = {
    "malformed_json": (_one_of("malformed_json", MALFORMED), 120),
    "deep_json": (_one_of("deep_json", DEEP), 40),
    "not_unicode": (_one_of("not_unicode", NOT_UNICODE), 40),
    "oversized_length": (oversized_length, 40),
    "oversized_chunked": (oversized_chunked, 40),
    "huge_max_tokens": (_one_of("huge_max_tokens", HUGE_MAX_TOKENS), 80),
    "bad_role": (_one_of("bad_role", BAD_ROLES), 80),
    "wrong_type": (_one_of("wrong_type", WRONG_TYPES), 80),
    "extreme_sampling": (_one_of("extreme_sampling", EXTREME_SAMPLING), 40),
    "huge_header": (huge_header, 20),
    "slow_body": (slow_body, 30),
    "slow_head": (slow_head, 20),
    "leave_stream": (leave_stream, 80),
    "leave_waiting": (leave_waiting, 50),
    "flood": (flood, 240),
}
# What each kind may get besides a 4xx or a close: valid requests may be served.
SERVED_OK = {"extreme_sampling", "flood", "leave_stream", "leave_waiting"}
REJECTIONS = {"malformed_json", "deep_json", "not_unicode", "oversized_length",
              "oversized_chunked", "huge_max_tokens", "bad_role", "wrong_type", "huge_header"}


async def run_abuse(port: int, counts: dict[str, int], limits: Limits, concurrency: int = 32,
                    seed: int = 0) -> list[Outcome]:
    """Every kind's requests, shuffled together, at most `concurrency` at once; the flood
    last, on its own, so its 429s come from good requests and not from the other kinds."""
    order = [(kind, i) for kind, n in counts.items() if kind != "flood" for i in range(n)]
    random.Random(seed).shuffle(order)
    order += [("flood", i) for i in range(counts.get("flood", 0))]
    gate = asyncio.Semaphore(concurrency)

    async def one(kind: str, i: int) -> Outcome:
        async with gate:
            return await KINDS[kind][0](port, i, limits)

    outcomes = []
    for phase in ([o for o in order if o[0] != "flood"], [o for o in order if o[0] == "flood"]):
        outcomes += await asyncio.gather(*(one(kind, i) for kind, i in phase))
    return outcomes


# --- after the abuse ------------------------------------------------------------------------

def wait_for_idle(base_url: str, timeout_s: float) -> tuple[dict, float]:
    """/health once no generation runs or waits (or the timeout), and how long it took."""
    start = time.perf_counter()
    while True:
        health = httpx.get(f"{base_url}/health", timeout=10).json()
        idle = health["active"] == 0 and health["waiting"] == 0
        if idle or time.perf_counter() - start > timeout_s:
            return health, time.perf_counter() - start
        time.sleep(0.01)


def seconds_to_free_slot(port: int, base_url: str, stream: bool, timeout_s: float = 60
                         ) -> float:
    """A client starts a generation over the whole context (streamed or not) and, once it
    runs, leaves abruptly (a reset, as a killed client): how long until /health shows the
    slot free. The server must be idle before."""
    path, body = (("/v1/chat/completions", _chat(stream=True, temperature=0)) if stream
                  else ("/v1/completions", _completion(temperature=0)))
    deadline = time.perf_counter() + timeout_s
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(post_bytes(path, body))
        while httpx.get(f"{base_url}/health", timeout=10).json()["active"] == 0:
            if time.perf_counter() > deadline:
                raise TimeoutError("the generation never started")
            time.sleep(0.005)
        if stream:
            sock.recv(1)  # the response has begun
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    left = time.perf_counter()
    wait_for_idle(base_url, timeout_s)
    return time.perf_counter() - left


def good_request(base_url: str, max_tokens: int = 16) -> dict:
    r = httpx.post(f"{base_url}/v1/completions", timeout=120, json={
        "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0})
    r.raise_for_status()
    return r.json()


def expected_text(model: Path, max_tokens: int = 16) -> str:
    """The greedy completion computed in this process, one thread, as the server runs."""
    torch.set_num_threads(1)
    served = load_served(model)
    ids = served.encode_prompt(PROMPT)
    return served.complete(ids, Sampling(max_tokens=max_tokens, temperature=0)).text()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def report(outcomes: list[Outcome]) -> list[str]:
    """The table: per kind, requests, endings and latencies."""
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_kind[o.kind].append(o)
    lines = [f"{'kind':<18} {'sent':>5}  {'p50 s':>6} {'p99 s':>6} {'max s':>6}  endings"]
    for kind in KINDS:
        got = by_kind.get(kind)
        if not got:
            continue
        seconds = [o.seconds for o in got]
        endings = ", ".join(f"{label} x{n}" for label, n in
                            sorted(Counter(o.label for o in got).items()))
        lines.append(f"{kind:<18} {len(got):>5}  {statistics.median(seconds):6.3f} "
                     f"{percentile(seconds, 0.99):6.3f} {max(seconds):6.3f}  {endings}")
    rejected = [o.seconds for o in outcomes if o.kind in REJECTIONS]
    codes = Counter(o.label for o in outcomes)
    lines += ["", f"all: {len(outcomes)} requests; " + ", ".join(
        f"{label} x{n}" for label, n in sorted(codes.items())),
        f"rejections ({len(rejected)}): p50 {statistics.median(rejected):.3f} s, "
        f"p99 {percentile(rejected, 0.99):.3f} s, max {max(rejected):.3f} s"
        if rejected else "rejections: none"]
    return lines


def failures(outcomes: list[Outcome]) -> list[str]:
    """What breaks the rules: a 5xx, a hang, a served answer to an invalid request, an error
    without OpenAI's shape, a 429 without Retry-After."""
    bad = []
    for o in outcomes:
        if not o.ok:
            bad.append(f"{o.kind}: {o.label} after {o.seconds:.2f} s")
        elif o.status == 200 and o.kind not in SERVED_OK:
            bad.append(f"{o.kind}: served (200) instead of rejected")
        elif o.error_shape is False:
            bad.append(f"{o.kind}: {o.status} without an OpenAI-style error body")
        elif o.retry_after is False:
            bad.append(f"{o.kind}: 429 without Retry-After")
    return bad


# --- the server in its own process ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of a process, in KiB (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


def start_server(model: Path, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fournil", "-q", "serve", "--model", str(model), "--port",
           str(port), "--threads", "1", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"fournil serve did not start: {' '.join(cmd)}\n"
                       f"{proc.stderr.read().decode(errors='replace')[-3000:]}")


def bake_smoke(work: Path) -> Path:
    print("baking recipes/smoke.toml (pass --model to skip) ...", flush=True)
    subprocess.run([sys.executable, "-m", "fournil", "-q", "bake",
                    str(ROOT / "recipes" / "smoke.toml"), "--run-dir", str(work / "smoke")],
                   check=True, stdout=subprocess.DEVNULL)
    return work / "smoke" / "export"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: bake smoke)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients at once")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies every kind's count (1: 1,000 requests)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--body-timeout", type=float, default=20.0)
    parser.add_argument("--head-timeout", type=float, default=10.0,
                        help="the server's head deadline (fournil serve's, not a flag)")
    parser.add_argument("--bound", type=float, default=90.0,
                        help="seconds a client waits for anything before it counts a hang")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of the whole mix on the same server (memory that grows "
                        "from round to round is a leak)")
    parser.add_argument("--leaves", type=int, default=10,
                        help="clients that leave one at a time, timed until their slot is free")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        model = args.model or bake_smoke(Path(work))
        expected = expected_text(model)
        port = free_port()
        server = start_server(model, port, ["--max-body-bytes", str(args.max_body_bytes),
                                            "--body-timeout", str(args.body_timeout)])
        base = f"http://127.0.0.1:{port}"
        try:
            first = good_request(base)["choices"][0]["text"]
            before = memory_kib(server.pid)
            counts = {kind: max(1, round(n * args.scale)) for kind, (_, n) in KINDS.items()}
            limits = Limits(args.max_body_bytes, args.body_timeout, args.head_timeout,
                            args.bound)
            load = os.getloadavg()
            start = time.perf_counter()
            outcomes: list[Outcome] = []
            peaks = []
            for r in range(args.rounds):
                outcomes += asyncio.run(run_abuse(port, counts, limits, args.concurrency, r))
                peaks.append(memory_kib(server.pid)["VmHWM"])
            wall = time.perf_counter() - start
            health, idle_after = wait_for_idle(base, 60)
            frees = {stream: [seconds_to_free_slot(port, base, stream)
                              for _ in range(args.leaves)] for stream in (True, False)}
            after = memory_kib(server.pid)
            answer = good_request(base)
            health_end = httpx.get(f"{base}/health", timeout=10).json()
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(f"model {model}; fournil serve --threads 1, max body {args.max_body_bytes} bytes, "
          f"body timeout {args.body_timeout:g} s, head timeout {args.head_timeout:g} s; "
          f"{args.concurrency} clients at once; load average {load[0]:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end; {os.cpu_count()} cores")
    print(f"{len(outcomes)} requests ({args.rounds} round(s)) in {wall:.1f} s\n")
    print("\n".join(report(outcomes)))
    slow = [o.seconds for o in outcomes if o.kind in ("slow_body", "slow_head")]
    if slow:
        print(f"slow clients: the server closed on them after at most {max(slow):.2f} s "
              f"(deadlines {args.body_timeout:g} s for bodies, {args.head_timeout:g} s for "
              "heads)")
    left = sum(o.end == "left" for o in outcomes)
    print(f"clients that left: {left}; generations cancelled: {health['cancelled']}; "
          f"slots free {idle_after:.2f} s after the last client ended "
          f"(active {health['active']}, waiting {health['waiting']})")
    if args.leaves:
        streamed, plain = frees[True], frees[False]
        print(f"a client leaving a generation under way, one at a time ({args.leaves} each): "
              f"its slot is free after at most {max(streamed):.3f} s streamed (median "
              f"{statistics.median(streamed):.3f}), {max(plain):.3f} s not streamed (median "
              f"{statistics.median(plain):.3f})")
    rounds = ", ".join(f"{kib / 1024:.1f}" for kib in peaks)
    print(f"server peak RSS (VmHWM): {before['VmHWM'] / 1024:.1f} MiB before, after each "
          f"round {rounds} MiB, at the end {after['VmHWM'] / 1024:.1f} MiB "
          f"(RSS now {after['VmRSS'] / 1024:.1f} MiB)")
    text = answer["choices"][0]["text"]
    print(f"good request afterwards: {text!r} (before the abuse: {first!r}; computed here: "
          f"{expected!r}) -> {'right' if text == first == expected else 'WRONG'}; "
          f"/health then: active {health_end['active']}, waiting {health_end['waiting']}")
    bad = failures(outcomes)
    if text != expected or health["active"] or health["waiting"]:
        bad.append("the good request's answer or the slots are wrong")
    print("\n" + ("every request ended as it should" if not bad else
                  f"{len(bad)} FAILURES:\n  " + "\n  ".join(bad[:40])))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
