"""Bounded concurrency: at most `max_concurrency` generations at once, each on a worker thread
so the event loop keeps answering, `max_queue` more waiting for a slot in arrival order, and a
429 with `Retry-After` beyond, rather than an unbounded queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fournil.serve.engine import Completion
from fournil.serve.requests import APIError

log = logging.getLogger("fournil.serve")


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


async def pieces(queue: asyncio.Queue) -> AsyncIterator[str]:
    while (item := await queue.get()) is not _END:
        if isinstance(item, BaseException):
            raise APIError(500, f"generation failed: {item}", None, "generation_failed",
                           "server_error") from item
        yield item
