"""A local GGUF through llama-cpp-python's chat completion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fournil.synth.generator import GenRequest, GenResult, OnResult, run_serially


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
        return run_serially(self._one, requests, self.id, progress, on_result)
