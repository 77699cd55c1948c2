"""An OpenAI-compatible endpoint (vLLM, llama.cpp's server, Ollama, `fournil serve`): several
base URLs, requests in flight, retries with backoff and jitter, Retry-After honoured."""

from __future__ import annotations

import email.utils
import itertools
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from fournil.synth.generator import GenRequest, GenResult, OnResult, Progress

MAX_RETRY_AFTER_S = 300.0  # a server asking for more is treated as down for this request


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (it may be a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class OpenAIGenerator:
    """POST {base_url}/chat/completions on any OpenAI-compatible server, `concurrency`
    requests in flight on a thread pool (the work is waiting on sockets), spread round-robin
    over the base URLs. Connection errors, timeouts, 429 and 5xx are retried with exponential
    backoff and jitter (a 429's or 503's Retry-After is honoured), and each retry goes to the
    next URL, so one dead endpoint among several costs a retry, not a sample. Other 4xx are
    the request's fault and are not retried."""

    def __init__(self, base_urls: Sequence[str] | str, model: str, api_key: str | None = None,
                 concurrency: int = 8, max_retries: int = 3, timeout_s: float = 120.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0) -> None:
        try:
            import httpx
        except ImportError as e:
            raise RuntimeError("the openai backend needs httpx: pip install httpx") from e
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("the openai backend needs at least one base URL")
        self.base_urls = [u.rstrip("/") for u in urls]
        self.model = model
        self.concurrency, self.max_retries = concurrency, max_retries
        self.timeout_s, self.backoff_s, self.max_backoff_s = timeout_s, backoff_s, max_backoff_s
        self.id = f"openai:{model}@{','.join(self.base_urls)}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One client for every thread (httpx.Client is thread-safe): connections are reused.
        self._client = httpx.Client(
            timeout=timeout_s, headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
        self._httpx = httpx
        self._turn = itertools.count()  # round-robin over the URLs, across batches too

    def _body(self, r: GenRequest) -> dict:
        body = {"model": self.model, "messages": r.chat(), "max_tokens": r.max_tokens,
                "temperature": r.temperature, "top_p": r.top_p, "seed": r.seed}
        if r.stop:
            body["stop"] = list(r.stop)
        return body

    def _backoff(self, attempt: int) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
        return delay / 2 + random.uniform(0, delay / 2)  # jitter: retries do not march in step

    def _one(self, request: GenRequest) -> GenResult:
        httpx, body = self._httpx, self._body(request)
        start, tries, error = next(self._turn), self.max_retries + 1, ""
        for attempt in range(tries):
            url = self.base_urls[(start + attempt) % len(self.base_urls)]
            wait = None
            try:
                response = self._client.post(f"{url}/chat/completions", json=body)
            except httpx.TimeoutException:
                error = f"timeout after {self.timeout_s:g}s from {url}"
            except httpx.TransportError as e:
                error = f"connection error from {url}: {type(e).__name__}: {e}"
            else:
                if response.status_code == 200:
                    return self._parse(response, url)
                error = f"http {response.status_code} from {url}: {response.text[:500]}"
                if response.status_code != 429 and response.status_code < 500:
                    return GenResult(None, error=error)  # the request is wrong: no retry
                wait = _retry_after(response.headers.get("retry-after"))
            if attempt + 1 < tries:
                time.sleep(self._backoff(attempt) if wait is None else wait)
        return GenResult(None, error=f"{error} (gave up after {tries} tries)")

    @staticmethod
    def _parse(response: object, url: str) -> GenResult:
        try:
            data = response.json()  # type: ignore[attr-defined]
            text = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            body = response.text[:300]  # type: ignore[attr-defined]
            return GenResult(None, error=f"not a chat completion from {url}: {body}")
        if not isinstance(text, str):
            return GenResult(None, error=f"no text content in the answer from {url}")
        return GenResult(text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                         completion_tokens=int(usage.get("completion_tokens") or 0))

    def generate(self, requests: Sequence[GenRequest], progress: bool = True,
                 on_result: OnResult | None = None) -> list[GenResult]:
        results: list[GenResult | None] = [None] * len(requests)
        if not requests:
            return []
        bar = Progress(self.id, len(requests), progress)
        pool = ThreadPoolExecutor(min(self.concurrency, len(requests)),
                                  thread_name_prefix="fournil-synth")
        try:
            futures = {pool.submit(self._one, r): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    result = future.result()
                except Exception as e:  # a bug in one request's path must not lose the batch
                    result = GenResult(None, error=f"{type(e).__name__}: {e}")
                results[i] = result
                if on_result is not None:
                    on_result(i, result)
                bar.update(result)
        finally:
            # On Ctrl-C, drop what has not started; what is running finishes in the background.
            pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._client.close()
