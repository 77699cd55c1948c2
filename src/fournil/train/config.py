"""The settings every trainer shares: the training loop (`TrainLoopConfig`, which the
`[pretrain]`, `[sft]` and `[dpo]` sections extend), the optimizer, multi-token prediction,
distillation and LoRA. Plain dataclasses, free of torch, so that loading a recipe (and every
curation worker that does) stays light; the code that uses each lives in loop.py, muon.py,
model/mtp.py, distill.py and lora.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoRAConfig:
    """Low-rank adapters (Hu et al., 2021) on the named nn.Linear layers; rank 0 is full
    fine-tuning. Trained through `peft`; the checkpoint holds the merged weights."""

    rank: int = 0
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def validate(self, key: str) -> None:
        check(self.rank >= 0, f"{key}.rank", f"must be >= 0 (0: full fine-tuning), got "
              f"{self.rank}")
        check(self.alpha > 0, f"{key}.alpha", f"must be > 0, got {self.alpha}")
        check(0 <= self.dropout < 1, f"{key}.dropout", f"must be in [0, 1), got {self.dropout}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        check(not unknown, f"{key}.targets",
              f"unknown layers {unknown} (known: {', '.join(LORA_TARGETS)})")
        check(not self.rank or bool(self.targets), f"{key}.targets",
              "at least one layer is needed with rank > 0")


def post_training_optimizer(lr: float) -> OptimizerConfig:
    """AdamW at a learning rate ~10x below pretraining's, no weight decay: SFT's and DPO's."""
    return OptimizerConfig(name="adamw", lr=lr, beta1=0.9, beta2=0.999, weight_decay=0.0)


@dataclass
class TrainLoopConfig:
    """The training loop every trainer runs: steps, batches, the optimizer and its schedule,
    evaluation, checkpoints and logging, the device. Each stage's section extends it with its
    own defaults and keys."""

    max_steps: int = 1000
    seq_len: int = 256
    batch_size: int = 16  # rows per micro-batch (per process under torchrun)
    grad_accum: int = 1
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # cosine: warmup then cosine decay to min_lr_ratio; wsd: warmup, a stable plateau, then a
    # linear decay over the last `decay_fraction` of the steps (which a run can be extended
    # from: continue the plateau, decay again)
    schedule: str = "cosine"
    warmup_steps: int = 50
    decay_fraction: float = 0.2  # wsd only
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 autocast where supported) | float32 | bfloat16

    def validate(self, key: str) -> None:
        for name in ("max_steps", "seq_len", "batch_size", "grad_accum", "eval_every",
                     "checkpoint_every", "log_every"):
            check(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
        check(self.schedule in ("cosine", "wsd"), f"{key}.schedule",
              f"cosine or wsd, got {self.schedule!r}")
        check(0 <= self.warmup_steps < self.max_steps, f"{key}.warmup_steps",
              "must be >= 0 and < max_steps")
        check(0 < self.decay_fraction <= 1, f"{key}.decay_fraction", "must be in (0, 1]")
        check(0 <= self.min_lr_ratio <= 1, f"{key}.min_lr_ratio", "must be in [0, 1]")
        check(self.grad_clip > 0, f"{key}.grad_clip", "must be > 0")
        check(self.device in ("auto", "cpu", "cuda", "mps"), f"{key}.device",
              "auto, cpu, cuda or mps")
        check(self.dtype in ("auto", "float32", "bfloat16"), f"{key}.dtype",
              "auto, float32 or bfloat16")
        self.optimizer.validate(f"{key}.optimizer")


@dataclass
class PostTrainConfig(TrainLoopConfig):
    """What SFT and DPO add to the loop: their data, the model they start from, LoRA."""

    data: list[str] = field(default_factory=list)
    base: str | None = None  # a checkpoint folder; unset: the run's stage before
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    eval_fraction: float = 0.05  # held out when the data has no split == "eval" rows
    eval_max_chats: int = 0  # the held-out loss over at most this many of them (0: all)

    def validate(self, key: str) -> None:
        super().validate(key)
        check(all(isinstance(p, str) and p.strip() for p in self.data), f"{key}.data",
              "must be a list of paths")
        check(self.base is None or self.base.strip() != "", f"{key}.base",
              "must be a folder path, or left out")
        check(0 <= self.eval_fraction < 0.5, f"{key}.eval_fraction", "must be in [0, 0.5)")
        check(self.eval_max_chats >= 0, f"{key}.eval_max_chats", "must be >= 0 (0: all)")
        self.lora.validate(f"{key}.lora")
        check(not (self.lora.rank and self.optimizer.name == "muon"), f"{key}.optimizer.name",
              "adamw with LoRA (Muon orthogonalises whole matrices, not low-rank factors)")
