"""The sft stage's settings (`[sft]`): the loop (train/config.py's `PostTrainConfig`, with SFT's
defaults) and the data selection before it. Standard library only.

Defaults suit the tiny CPU models of recipes/tiny-cpu.toml: a few hundred AdamW steps at a
learning rate ~10x below pretraining's, a short warmup, cosine decay, no weight decay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fournil.core.validation import check
from fournil.train.config import OptimizerConfig, PostTrainConfig, post_training_optimizer


@dataclass
class SelectConfig:
    """Which chats SFT trains on. Token counts are those of the whole chat as encoded for
    training; citation bounds apply to RAG samples (task "rag") and count the
    `<ref name="N">` quotes of the last answer. 0 disables a bound."""

    min_tokens: int = 8
    max_tokens: int = 0  # 0: the SFT row length (seq_len + 1), the most packing can hold
    min_citations: int = 1
    max_citations: int = 0
    check_format: bool = True  # roles alternate user/assistant, last one the assistant's
    judge_threshold: float | None = None  # keep chats an LLM judge scores >= this (0..1)

    def validate(self, key: str) -> None:
        for name in ("min_tokens", "max_tokens", "min_citations", "max_citations"):
            check(getattr(self, name) >= 0, f"{key}.{name}", "must be >= 0 (0 disables)")
        check(not self.max_tokens or self.max_tokens >= self.min_tokens, f"{key}.max_tokens",
              f"must be >= min_tokens ({self.min_tokens})")
        check(not self.max_citations or self.max_citations >= self.min_citations,
              f"{key}.max_citations", f"must be >= min_citations ({self.min_citations})")
        check(self.judge_threshold is None or 0 <= self.judge_threshold <= 1,
              f"{key}.judge_threshold", "must be in [0, 1], or left out")


@dataclass
class SFTConfig(PostTrainConfig):
    data: list[str] = field(default_factory=list)  # synth stage folders, JSONL or Parquet
    max_steps: int = 300
    seq_len: int = 256  # a packed row: several whole chats, seq_len + 1 tokens
    batch_size: int = 8  # rows per micro-batch
    optimizer: OptimizerConfig = field(default_factory=lambda: post_training_optimizer(2e-4))
    warmup_steps: int = 10
    eval_every: int = 50
    select: SelectConfig = field(default_factory=SelectConfig)

    def validate(self, key: str) -> None:
        super().validate(key)
        self.select.validate(f"{key}.select")
