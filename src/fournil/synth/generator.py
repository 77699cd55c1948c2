"""The interface every LLM generator of `fournil synth` has, and the plumbing they share.

A generator turns a batch of `GenRequest`s into `GenResult`s in the same order and never
raises for one bad request: a request that still fails after its retries comes back with
`text=None` and an `error` saying why, so a long synth run goes on and records the failure.
The backends (an OpenAI-compatible endpoint, a GGUF through llama-cpp-python, a transformers
model) are in backends/; the durable cache in front of them is cache.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("fournil")

PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class GenRequest:
    """One chat to complete. Hashable (tuples only), so it can key a cache or a dict."""

    messages: tuple[tuple[str, str], ...]  # ((role, content), ...)
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    @classmethod
    def from_chat(cls, messages: Iterable[Mapping[str, str]], **sampling: object) -> GenRequest:
        """From OpenAI-style [{"role", "content"}, ...] (what `fournil.formats.prompts` returns)."""
        return cls(tuple((m["role"], m["content"]) for m in messages), **sampling)  # type: ignore[arg-type]

    def chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass
class GenResult:
    text: str | None  # None when the request failed after all retries
    error: str | None = None  # e.g. "http 500 ... (4 tries)", "timeout after 60s ..."
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


# Called as each request finishes, from whichever thread ran it: the index in the batch and
# its result. The cache uses it to store results before the whole batch is done.
OnResult = Callable[[int, GenResult], None]


class Generator(Protocol):
    id: str  # provenance recorded in every sample, e.g. "openai:SmolLM2@http://host:8000/v1"

    def generate(self, requests: Sequence[GenRequest], progress: bool = True,
                 on_result: OnResult | None = None) -> list[GenResult]:
        """Results in request order; `on_result(i, result)` as each one finishes."""
        ...


class Progress:
    """A log line every ~10 s: done/total, rate and ETA (a synth run is often a log file,
    where a redrawn progress bar is noise)."""

    def __init__(self, desc: str, total: int, enabled: bool) -> None:
        self.desc, self.total, self.enabled = desc, total, enabled
        self.done = self.failed = 0
        self.start = self.last = time.monotonic()

    def update(self, result: GenResult) -> None:
        self.done += 1
        self.failed += result.text is None
        now = time.monotonic()
        if self.enabled and now - self.last >= PROGRESS_EVERY_S and self.done < self.total:
            self.last = now
            rate = self.done / (now - self.start)
            log.info("%s: %d/%d requests (%d failed), %.2f req/s, ETA %.0f s", self.desc,
                     self.done, self.total, self.failed, rate, (self.total - self.done) / rate)

    def close(self) -> None:
        if self.enabled and self.total:
            elapsed = time.monotonic() - self.start
            log.info("%s: %d requests (%d failed) in %.1f s", self.desc, self.done,
                     self.failed, elapsed)


def run_serially(one: Callable[[GenRequest], GenResult], requests: Sequence[GenRequest],
                  desc: str, progress: bool, on_result: OnResult | None) -> list[GenResult]:
    """The local backends: one request at a time (the model already uses every core)."""
    bar, results = Progress(desc, len(requests), progress), []
    for i, request in enumerate(requests):
        try:
            result = one(request)
        except Exception as e:  # one bad request (too long a prompt, ...) must not end the run
            result = GenResult(None, error=f"{type(e).__name__}: {e}")
        results.append(result)
        if on_result is not None:
            on_result(i, result)
        bar.update(result)
    bar.close()
    return results


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [i for s in stop if s and (i := text.find(s)) >= 0]
    return text[:min(cuts)] if cuts else text
