"""Training settings, as the recipe nests them under `[pretrain]`: the optimizer, multi-token
prediction and distillation. Plain dataclasses, free of torch, so that loading a recipe (and
every curation worker that does) stays light; the code that uses each lives in muon.py,
model/mtp.py and distill.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from fournil.core.validation import check

NS_STEPS = 5  # Newton-Schulz iterations of Muon
ADJUST_LR = ("original", "match_rms_adamw")


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # adamw | muon
    # AdamW: every parameter under "adamw"; embeddings, head and norms under "muon"
    lr: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1  # on matrices and embeddings, never on norms
    # Muon: the matrices inside the blocks
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_weight_decay: float = 0.0  # decoupled, multiplied by muon_lr as in torch.optim.Muon
    muon_adjust_lr: str = "original"  # original | match_rms_adamw
    muon_ns_steps: int = NS_STEPS

    def validate(self, key: str) -> None:
        check(self.name in ("adamw", "muon"), f"{key}.name",
               f"adamw or muon, got {self.name!r}")
        check(self.lr > 0, f"{key}.lr", f"must be > 0, got {self.lr}")
        for name in ("beta1", "beta2"):
            check(0 <= getattr(self, name) < 1, f"{key}.{name}", "must be in [0, 1)")
        check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")
        check(self.muon_lr > 0, f"{key}.muon_lr", f"must be > 0, got {self.muon_lr}")
        check(0 <= self.muon_momentum < 1, f"{key}.muon_momentum", "must be in [0, 1)")
        check(self.muon_weight_decay >= 0, f"{key}.muon_weight_decay", "must be >= 0")
        check(self.muon_adjust_lr in ADJUST_LR, f"{key}.muon_adjust_lr",
               f"original or match_rms_adamw, got {self.muon_adjust_lr!r}")
        check(1 <= self.muon_ns_steps < 100, f"{key}.muon_ns_steps", "must be in [1, 100)")


@dataclass
class MTPConfig:
    depth: int = 0  # 0: off; DeepSeek-V3 uses 1
    weight: float = 0.3  # the loss is main + weight * mean over depths (DeepSeek-V3's lambda)

    def validate(self, key: str) -> None:
        check(0 <= self.depth <= 8, f"{key}.depth", f"must be in [0, 8], got {self.depth}")
        check(self.weight >= 0, f"{key}.weight", f"must be >= 0, got {self.weight}")


@dataclass
class DistillConfig:
    teacher: str | None = None  # a fournil checkpoint or HF Qwen3 folder; None: no distillation
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the KL term; 1 - alpha on the cross-entropy with the data

    def validate(self, key: str) -> None:
        check(self.teacher is None or self.teacher.strip() != "", f"{key}.teacher",
              "must be a folder path, or left out")
        check(self.temperature > 0, f"{key}.temperature",
              f"must be > 0, got {self.temperature}")
        check(0 <= self.alpha <= 1, f"{key}.alpha", f"must be in [0, 1], got {self.alpha}")
