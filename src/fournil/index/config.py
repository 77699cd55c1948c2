"""The index stage's settings (`[index]`). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from fournil.core.validation import check as _check

INDEX_BACKENDS = ("bm25s",)  # fournil.index.store.BACKENDS


@dataclass
class IndexConfig:
    # Passage sizes, in characters: whole paragraphs packed from min_chars up to max_chars.
    # On the 47 answerable hand-written questions (bench/index_bench.py --windows), 500-1000
    # has the best recall@3 (0.94; 300-700: 0.81, 700-1400: 0.91, 1000-2000: 0.85) and ties
    # 700-1400 on MRR (0.755 and 0.758). With three of them, `fournil ask`'s prompts are
    # 482-1149 SmolLM2 tokens (median 862) on those questions: a model with a 512-token
    # context wants shorter passages (tiny-cpu-sft's RAG samples have 100-250 characters).
    min_chars: int = 500
    max_chars: int = 1000
    backend: str = "bm25s"

    def validate(self, key: str) -> None:
        _check(self.min_chars >= 1, f"{key}.min_chars", "must be >= 1")
        _check(self.max_chars >= max(self.min_chars, 100), f"{key}.max_chars",
               f"must be >= min_chars and >= 100, got {self.max_chars}")
        _check(self.backend in INDEX_BACKENDS, f"{key}.backend",
               f"expected one of {', '.join(INDEX_BACKENDS)}, got {self.backend!r}")
