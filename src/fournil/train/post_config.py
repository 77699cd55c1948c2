"""Post-training settings, as the recipe nests them under `[sft]` and `[dpo]`: supervised
fine-tuning on chats (full or LoRA), the data selection before it, and direct preference
optimisation. Plain dataclasses, free of torch, like train/config.py; the code that uses them
is sft.py, select.py, lora.py and dpo.py.

Defaults suit the tiny CPU models of recipes/tiny-cpu.toml: a few hundred AdamW steps at a
learning rate ~10x below pretraining's, a short warmup, cosine decay, no weight decay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fournil.core.validation import check
from fournil.train.config import OptimizerConfig

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _post_optimizer(lr: float) -> OptimizerConfig:
    return OptimizerConfig(name="adamw", lr=lr, beta1=0.9, beta2=0.999, weight_decay=0.0)


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
class SFTConfig:
    data: list[str] = field(default_factory=list)  # synth stage folders, JSONL or Parquet
    base: str | None = None  # a checkpoint folder; unset: the run's final pretrain checkpoint
    max_steps: int = 300
    seq_len: int = 256  # a packed row: several whole chats, seq_len + 1 tokens
    batch_size: int = 8  # rows per micro-batch
    grad_accum: int = 1
    optimizer: OptimizerConfig = field(default_factory=lambda: _post_optimizer(2e-4))
    schedule: str = "cosine"  # cosine | wsd (schedule.py)
    warmup_steps: int = 10
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    eval_fraction: float = 0.05  # held out when the data has no split == "eval" chats
    eval_every: int = 50
    checkpoint_every: int = 100
    log_every: int = 10
    device: str = "auto"
    dtype: str = "auto"

    def validate(self, key: str) -> None:
        _validate_loop(self, key)
        check(0 <= self.eval_fraction < 0.5, f"{key}.eval_fraction", "must be in [0, 0.5)")
        self.lora.validate(f"{key}.lora")
        self.select.validate(f"{key}.select")


@dataclass
class DPOConfig:
    data: list[str] = field(default_factory=list)  # JSONL or Parquet: prompt, chosen, rejected
    base: str | None = None  # the policy's start and the frozen reference; unset: the SFT's
    beta: float = 0.1  # how far from the reference the policy may move (DPO's beta)
    max_steps: int = 100
    seq_len: int = 256  # prompt + response; longer pairs are rejected with a reason
    batch_size: int = 4  # pairs per micro-batch
    grad_accum: int = 1
    optimizer: OptimizerConfig = field(default_factory=lambda: _post_optimizer(5e-5))
    schedule: str = "cosine"
    warmup_steps: int = 5
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    eval_fraction: float = 0.1  # held out when the pairs have no split == "eval" rows
    eval_every: int = 25
    checkpoint_every: int = 50
    log_every: int = 5
    device: str = "auto"
    dtype: str = "auto"

    def validate(self, key: str) -> None:
        _validate_loop(self, key)
        check(self.beta > 0, f"{key}.beta", f"must be > 0, got {self.beta}")
        check(0 <= self.eval_fraction < 0.5, f"{key}.eval_fraction", "must be in [0, 0.5)")
        self.lora.validate(f"{key}.lora")


def _validate_loop(cfg: SFTConfig | DPOConfig, key: str) -> None:
    """The training-loop keys SFT and DPO share with pretraining."""
    for name in ("max_steps", "seq_len", "batch_size", "grad_accum", "eval_every",
                 "checkpoint_every", "log_every"):
        check(getattr(cfg, name) > 0, f"{key}.{name}", "must be > 0")
    check(cfg.schedule in ("cosine", "wsd"), f"{key}.schedule",
          f"cosine or wsd, got {cfg.schedule!r}")
    check(0 <= cfg.warmup_steps < cfg.max_steps, f"{key}.warmup_steps",
          "must be >= 0 and < max_steps")
    check(0 < cfg.decay_fraction <= 1, f"{key}.decay_fraction", "must be in (0, 1]")
    check(0 <= cfg.min_lr_ratio <= 1, f"{key}.min_lr_ratio", "must be in [0, 1]")
    check(cfg.grad_clip > 0, f"{key}.grad_clip", "must be > 0")
    check(cfg.device in ("auto", "cpu", "cuda", "mps"), f"{key}.device",
          "auto, cpu, cuda or mps")
    check(cfg.dtype in ("auto", "float32", "bfloat16"), f"{key}.dtype",
          "auto, float32 or bfloat16")
    check(all(isinstance(p, str) and p.strip() for p in cfg.data), f"{key}.data",
          "must be a list of paths")
    check(cfg.base is None or cfg.base.strip() != "", f"{key}.base",
          "must be a folder path, or left out")
    cfg.optimizer.validate(f"{key}.optimizer")
    check(not (cfg.lora.rank and cfg.optimizer.name == "muon"), f"{key}.optimizer.name",
          "adamw with LoRA (Muon orthogonalises whole matrices, not low-rank factors)")
