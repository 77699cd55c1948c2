"""The tokenizer stage's settings (`[tokenizer]`). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from fournil.core.validation import check as _check


@dataclass
class TokenizerConfig:
    vocab_size: int = 8192
    min_frequency: int = 2
    max_train_chars: int = 50_000_000  # cap on text fed to the BPE trainer

    def validate(self, key: str) -> None:
        _check(300 <= self.vocab_size <= 1 << 20, f"{key}.vocab_size",
               f"must be between 300 and {1 << 20}, got {self.vocab_size}")
        _check(self.min_frequency >= 1, f"{key}.min_frequency", "must be >= 1")
