"""The dpo stage's settings (`[dpo]`): the loop (train/config.py's `PostTrainConfig`, with DPO's
defaults) and DPO's beta. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field

from fournil.core.validation import check
from fournil.train.config import OptimizerConfig, PostTrainConfig, post_training_optimizer


@dataclass
class DPOConfig(PostTrainConfig):
    data: list[str] = field(default_factory=list)  # JSONL or Parquet: prompt, chosen, rejected
    # the policy's start and the frozen reference; unset: the run's SFT, else pretrain
    base: str | None = None
    beta: float = 0.1  # how far from the reference the policy may move (DPO's beta)
    max_steps: int = 100
    seq_len: int = 256  # prompt + response; longer pairs are rejected with a reason
    batch_size: int = 4  # pairs per micro-batch
    optimizer: OptimizerConfig = field(default_factory=lambda: post_training_optimizer(5e-5))
    warmup_steps: int = 5
    eval_fraction: float = 0.1  # held out when the pairs have no split == "eval" rows
    eval_every: int = 25
    checkpoint_every: int = 50
    log_every: int = 5

    def validate(self, key: str) -> None:
        super().validate(key)
        check(self.beta > 0, f"{key}.beta", f"must be > 0, got {self.beta}")
