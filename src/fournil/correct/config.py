"""The correct stage's settings (`[correct]`). Standard library only."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fournil.core.validation import check as _check


@dataclass
class CorrectConfig:
    """`fournil correct`: the OCR-flagged documents of the curate stage, corrected by a model.

    The decoding defaults are `fournil.eval.corrector.DEFAULT` (a test keeps them equal),
    chosen on synthetic held-out pairs: docs/evaluation.md, "Correcting OCR"."""

    # [LABEL=][hf:]PATH: a fournil or transformers folder, or a .gguf file (llama.cpp);
    # relative to the recipe
    model: str = ""
    margin: float = 4.0  # copy bias, in nats (inf: the input is kept)
    span: int = 1  # the most words a departure from the input may rewrite (0: no limit)
    max_change: float = 0.25  # keep a piece's input where the answer changes more of it (0: off)
    word_edit: int = 0  # keep the input in each stretch of words changed by more (0: off)
    piece_chars: int = 400  # documents are corrected in pieces of at most this many characters
    chunk_chars: int = 20_000  # flagged characters per chunk, the unit a resumed run skips
    batch: int = 16  # pieces answered together (an engine that batches does them at once)
    max_new_tokens: int = 512
    device: str = "cpu"

    def validate(self, key: str) -> None:
        _check(self.margin >= 0 and not math.isnan(self.margin), f"{key}.margin",
               f"must be >= 0 (nats; inf keeps the input), got {self.margin}")
        _check(self.span >= 0, f"{key}.span", "must be >= 0 (0: no limit)")
        _check(self.max_change >= 0, f"{key}.max_change", "must be >= 0 (0: off)")
        _check(self.word_edit >= 0, f"{key}.word_edit", "must be >= 0 (0: off)")
        _check(self.piece_chars >= 20, f"{key}.piece_chars", "must be >= 20")
        for name in ("chunk_chars", "batch", "max_new_tokens"):
            _check(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
