"""A durable cache of LLM generations, so a resumed or repeated synth run pays nothing twice.

SQLite in WAL mode: every stored result is committed at once, a crash mid-run loses at most
the request in flight, and concurrent readers never see a torn row. The key is the sha256 of
everything that decides the output: the generator id without its URL (the same model behind
another endpoint is the same cache), the messages and the sampling parameters. Only
successful results are stored: a failed request is retried on the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from fournil.synth.generator import Generator, GenRequest, GenResult, OnResult

log = logging.getLogger("fournil")

__all__ = ["GenerationCache", "CachedGenerator", "cache_key", "model_identity"]

CACHE_FILE = "generations.sqlite"


def model_identity(generator_id: str) -> str:
    """The part of a generator id that decides its outputs: the URL after '@' does not."""
    return generator_id.split("@", 1)[0]


def cache_key(generator_id: str, request: GenRequest) -> str:
    payload = [model_identity(generator_id), [list(m) for m in request.messages],
               request.max_tokens, request.temperature, request.top_p, request.seed,
               list(request.stop)]
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """sha256 key -> (text, token counts), in `<cache_dir>/generations.sqlite`."""

    def __init__(self, cache_dir: Path | str):
        self.path = Path(cache_dir) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the generator's threads, serialised by a lock: writes are
        # tiny next to an LLM call, so a connection per thread would buy nothing.
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a process crash never loses a commit; only a power cut can
            # drop the last few, and those are just regenerated.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, generator TEXT,"
                " text TEXT NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER,"
                " created REAL)")
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise RuntimeError(f"{self.path}: not a usable generation cache ({e}); "
                               "delete it to start afresh") from None

    def get(self, key: str) -> tuple[str, int, int] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens FROM generations WHERE key = ?",
                (key,)).fetchone()
        return None if row is None else (row[0], row[1] or 0, row[2] or 0)

    def put(self, key: str, generator_id: str, text: str, prompt_tokens: int = 0,
            completion_tokens: int = 0) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?)",
                (key, generator_id, text, prompt_tokens, completion_tokens, time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedGenerator:
    """Wraps a Generator: answers what the cache holds, sends only the misses to it."""

    def __init__(self, inner: Generator, cache: GenerationCache):
        self.inner = inner
        self.cache = cache
        self.id = inner.id

    def generate(self, requests: Sequence[GenRequest], progress: bool = True,
                 on_result: OnResult | None = None) -> list[GenResult]:
        keys = [cache_key(self.id, r) for r in requests]
        results: list[GenResult | None] = [None] * len(requests)
        todo: dict[str, list[int]] = {}  # key -> the indices asking for it (duplicates: once)
        for i, key in enumerate(keys):
            hit = None if key in todo else self.cache.get(key)
            if hit is None:
                todo.setdefault(key, []).append(i)
                continue
            results[i] = GenResult(text=hit[0], cached=True, prompt_tokens=hit[1],
                                   completion_tokens=hit[2])
            if on_result is not None:
                on_result(i, results[i])
        if todo:
            log.info("%s: %d of %d requests cached, %d to generate", self.id,
                     len(requests) - sum(map(len, todo.values())), len(requests), len(todo))
            pending = list(todo)

            def store(j: int, result: GenResult) -> None:
                # called as each request finishes, so a crash mid-batch keeps what was done
                if result.text is not None:
                    self.cache.put(pending[j], self.id, result.text, result.prompt_tokens,
                                   result.completion_tokens)
                for n, i in enumerate(todo[pending[j]]):
                    # a repeat of a request in the same batch was paid for once
                    results[i] = result if n == 0 else dataclasses.replace(result, cached=True)
                    if on_result is not None:
                        on_result(i, results[i])

            self.inner.generate([requests[todo[k][0]] for k in pending], progress=progress,
                                on_result=store)
        return results  # type: ignore[return-value]
