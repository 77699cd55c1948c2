"""LLM generators for `fournil synth`: one interface over an OpenAI-compatible endpoint (vLLM,
llama.cpp's server, Ollama, `fournil serve`), a local GGUF through llama-cpp-python, and a
local Hugging Face model through transformers.

A generator turns a batch of `GenRequest`s into `GenResult`s in the same order and never
raises for one bad request: a request that still fails after its retries comes back with
`text=None` and an `error` saying why, so a long synth run goes on and records the failure.
`make_generator` builds one from the recipe's `[synth.generator]` table, wrapped in the
durable cache (`fournil.synth.cache`) when given a cache folder.

Nothing heavy is imported here: httpx, llama_cpp, torch and transformers are imported by the
backend that needs them, when it is built.
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fournil.core.validation import check as _check

__all__ = ["GenRequest", "GenResult", "Generator", "GeneratorConfig", "make_generator",
           "ProgrammaticGenerator", "OpenAIGenerator", "LlamaCppGenerator", "HFGenerator"]

log = logging.getLogger("fournil")

BACKENDS = ("programmatic", "openai", "llama_cpp", "hf")
PROGRESS_EVERY_S = 10.0
MAX_RETRY_AFTER_S = 300.0  # a server asking for more is treated as down for this request


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

    def generate(self, requests: Sequence[GenRequest], progress: bool = True
                 ) -> list[GenResult]: ...


@dataclass
class GeneratorConfig:
    """The recipe's `[synth.generator]` table."""

    backend: str = "programmatic"  # programmatic | openai | llama_cpp | hf
    base_url: list[str] = field(default_factory=list)  # openai: requests are spread over them
    model: str = ""  # openai: model name; llama_cpp: a .gguf; hf: a folder or a .gguf file
    api_key_env: str = "OPENAI_API_KEY"  # the env var's *name*: keys never go in recipes
    concurrency: int = 8  # requests in flight (openai); local backends run one at a time
    max_retries: int = 3
    timeout_s: float = 120.0
    backoff_s: float = 1.0  # first retry delay (openai), doubled each try, with jitter

    def validate(self, key: str) -> None:
        _check(self.backend in BACKENDS, f"{key}.backend",
               f"unknown backend {self.backend!r} ({', '.join(BACKENDS)})")
        _check(self.concurrency >= 1, f"{key}.concurrency", f"must be >= 1, got {self.concurrency}")
        _check(self.max_retries >= 0, f"{key}.max_retries", f"must be >= 0, got {self.max_retries}")
        _check(self.timeout_s > 0, f"{key}.timeout_s", f"must be > 0, got {self.timeout_s}")
        _check(self.backoff_s >= 0, f"{key}.backoff_s", f"must be >= 0, got {self.backoff_s}")
        if self.backend == "openai":
            _check(len(self.base_url) > 0, f"{key}.base_url",
                   "the openai backend needs at least one URL, e.g. [\"http://127.0.0.1:8000/v1\"]")
            for i, url in enumerate(self.base_url):
                _check(url.startswith(("http://", "https://")), f"{key}.base_url[{i}]",
                       f"must start with http:// or https://, got {url!r}")
        if self.backend in ("openai", "llama_cpp", "hf"):
            what = {"openai": "the model name the endpoint serves",
                    "llama_cpp": "the path to a .gguf file",
                    "hf": "the path to a model folder or a .gguf file"}[self.backend]
            _check(bool(self.model), f"{key}.model", f"the {self.backend} backend needs {what}")
        if self.backend == "llama_cpp":
            _check(self.model.endswith(".gguf"), f"{key}.model",
                   f"the llama_cpp backend loads a .gguf file, got {self.model!r}")


def make_generator(config: GeneratorConfig, cache_dir: Path | None = None) -> Generator:
    """The generator a `[synth.generator]` table describes; with `cache_dir`, behind the
    durable cache so a resumed run only pays for what it has not generated yet."""
    config.validate("synth.generator")
    generator: Generator
    if config.backend == "programmatic":
        return ProgrammaticGenerator()  # nothing to cache: it never generates
    if config.backend == "openai":
        generator = OpenAIGenerator(
            config.base_url, config.model, api_key=os.environ.get(config.api_key_env) or None,
            concurrency=config.concurrency, max_retries=config.max_retries,
            timeout_s=config.timeout_s, backoff_s=config.backoff_s)
    elif config.backend == "llama_cpp":
        generator = LlamaCppGenerator(config.model)
    else:
        generator = HFGenerator(config.model)
    if cache_dir is None:
        return generator
    from fournil.synth.cache import CachedGenerator, GenerationCache
    return CachedGenerator(generator, GenerationCache(cache_dir))


# --- shared plumbing ------------------------------------------------------------------------

class _Progress:
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


def _run_serially(one: Callable[[GenRequest], GenResult], requests: Sequence[GenRequest],
                  desc: str, progress: bool, on_result: OnResult | None) -> list[GenResult]:
    """The local backends: one request at a time (the model already uses every core)."""
    bar, results = _Progress(desc, len(requests), progress), []
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


def _truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [i for s in stop if s and (i := text.find(s)) >= 0]
    return text[:min(cuts)] if cuts else text


# --- programmatic ---------------------------------------------------------------------------

class ProgrammaticGenerator:
    """For recipes whose tasks are all programmatic: there is no model to call."""

    id = "programmatic"

    def generate(self, requests: Sequence[GenRequest], progress: bool = True,
                 on_result: OnResult | None = None) -> list[GenResult]:
        raise RuntimeError(
            f"a task asked for {len(requests)} LLM generation(s), but [synth.generator] "
            "backend is \"programmatic\": set backend to openai, llama_cpp or hf")


# --- OpenAI-compatible HTTP -----------------------------------------------------------------

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
        bar = _Progress(self.id, len(requests), progress)
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


# --- llama.cpp ------------------------------------------------------------------------------

class LlamaCppGenerator:
    """A local GGUF through llama-cpp-python's chat completion (the GGUF's chat template)."""

    def __init__(self, model_path: str | Path, n_ctx: int = 4096,
                 n_threads: int | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise RuntimeError("the llama_cpp backend needs llama-cpp-python: "
                               "pip install 'fournil[llama]' (it compiles llama.cpp, "
                               "~10-25 min)") from e
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: GGUF model file not found")
        self.id = f"llama_cpp:{path.name}"
        self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)

    def _one(self, r: GenRequest) -> GenResult:
        out = self._llm.create_chat_completion(
            messages=r.chat(), max_tokens=r.max_tokens, temperature=r.temperature,
            top_p=r.top_p, seed=r.seed, stop=list(r.stop) or None)
        usage = out.get("usage") or {}
        return GenResult(out["choices"][0]["message"]["content"] or "",
                         prompt_tokens=usage.get("prompt_tokens", 0),
                         completion_tokens=usage.get("completion_tokens", 0))

    def generate(self, requests: Sequence[GenRequest], progress: bool = True,
                 on_result: OnResult | None = None) -> list[GenResult]:
        return _run_serially(self._one, requests, self.id, progress, on_result)


# --- Hugging Face transformers --------------------------------------------------------------

class HFGenerator:
    """A local transformers causal LM (a folder, or a .gguf file that transformers
    dequantises): the tokenizer's chat template, then `generate` — greedy at temperature 0,
    else sampling seeded per request, so a result does not depend on its batch."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from fournil.serve.engine import hf_stop_ids, load_hf_model  # torch, lazily

        self.path = Path(path)
        self.model, self.tokenizer = load_hf_model(self.path, device)
        # the ids `fournil serve` stops at too, so both give the same greedy text
        self.eos = sorted(hf_stop_ids(self.model, self.tokenizer))
        self.id = f"hf:{self.path.name}"

    def _one(self, r: GenRequest) -> GenResult:
        import torch

        ids = self.tokenizer.apply_chat_template(r.chat(), add_generation_prompt=True,
                                                 return_dict=False)
        prompt = torch.tensor([ids], device=self.model.device)
        sampling: dict = {"do_sample": False}
        if r.temperature > 0:
            torch.manual_seed(r.seed)
            sampling = {"do_sample": True, "temperature": r.temperature, "top_p": r.top_p,
                        "top_k": 0}
        with torch.inference_mode():
            out = self.model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=r.max_tokens,
                eos_token_id=self.eos, pad_token_id=self.eos[0] if self.eos else None,
                stop_strings=list(r.stop) or None, tokenizer=self.tokenizer, **sampling)
        new = out[0, prompt.shape[1]:].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return GenResult(_truncate_at_stop(text, r.stop), prompt_tokens=len(ids),
                         completion_tokens=len(new))

    def generate(self, requests: Sequence[GenRequest], progress: bool = True,
                 on_result: OnResult | None = None) -> list[GenResult]:
        return _run_serially(self._one, requests, self.id, progress, on_result)
