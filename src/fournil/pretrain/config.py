"""The pretrain stage's settings (`[pretrain]`): the loop (train/config.py), multi-token
prediction, distillation, the data mixture, evaluation tokens, compilation and parallelism.
Standard library only, so that loading a recipe stays light."""

from __future__ import annotations

from dataclasses import dataclass, field

from fournil.core.validation import check
from fournil.tokens.config import MixtureConfig
from fournil.train.config import DistillConfig, MTPConfig, TrainLoopConfig


@dataclass
class PretrainConfig(TrainLoopConfig):
    mtp: MTPConfig = field(default_factory=MTPConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # sources weighted per phase ([[pretrain.mixture.phases]]); none: the natural mix
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    eval_tokens: int = 65_536
    compile: bool = False  # torch.compile the training step (worth it on GPUs)
    # under torchrun: ddp (a whole model per process) or fsdp (parameters, gradients and
    # optimizer state sharded over processes, for models too large for one device)
    parallel: str = "ddp"

    def validate(self, key: str) -> None:
        if self.max_steps == 0:  # an open base taken as it is: the recipe checks it has one
            return
        super().validate(key)
        check(self.eval_tokens > 0, f"{key}.eval_tokens", "must be > 0")
        if self.schedule == "wsd":
            check(self.warmup_steps + round(self.decay_fraction * self.max_steps)
                  <= self.max_steps, f"{key}.decay_fraction",
                  "warmup and decay together exceed max_steps")
        check(self.parallel in ("ddp", "fsdp"), f"{key}.parallel",
              f"ddp or fsdp, got {self.parallel!r}")
        self.mtp.validate(f"{key}.mtp")
        self.distill.validate(f"{key}.distill")
        self.mixture.validate(f"{key}.mixture")
