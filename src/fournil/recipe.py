"""Recipes: one TOML file describes a whole bake. Validated on load.

Every section is a dataclass; unknown keys, wrong types and out-of-range values are errors
that name the key (`pretrain.optimizer.lr: must be > 0, got -1`). Paths inside a recipe are relative
to the recipe file, so a recipe and its data can move together.
"""

from __future__ import annotations

import codecs
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fournil.core.validation import RecipeError
from fournil.core.validation import check as _check
from fournil.curate.filters import QualityConfig
from fournil.curate.minhash import NearDedupConfig
from fournil.provenance.licenses import DEFAULT_ALLOWED, normalize_license
from fournil.synth.config import SynthConfig
from fournil.tokens.mixture import MixtureConfig
from fournil.train.config import DistillConfig, MTPConfig, OptimizerConfig
from fournil.train.post_config import DPOConfig, SFTConfig

__all__ = ["RecipeError", "Recipe", "load_recipe", "recipe_from_dict"]


@dataclass
class SourceSpec:
    """One input of the ingest stage: a file or folder, with its provenance."""

    path: str
    name: str | None = None  # the records' `source`; a folder's sidecar may give it
    license: str | None = None  # raw or SPDX; normalised at ingest
    format: str | None = None  # auto|jsonl|json|parquet|txt|pdf|html (unset: the sidecar's)
    language: str | None = None
    text_field: str | None = None  # unset: the sidecar's, else "text"
    id_field: str | None = None
    encoding: str | None = None  # text and HTML files: this encoding, not detection

    def validate(self, key: str) -> None:
        _check(self.format in (None, "auto", "jsonl", "json", "parquet", "txt", "pdf", "html"),
               f"{key}.format",
               f"unknown format {self.format!r} (auto, jsonl, json, parquet, txt, pdf, html)")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                _check(False, f"{key}.encoding", f"unknown encoding {self.encoding!r} "
                       "(e.g. utf-8, cp1252, latin-1, utf-16)")


@dataclass
class IngestConfig:
    sources: list[SourceSpec] = field(default_factory=list)
    rows_per_shard: int = 50_000
    strict: bool = False  # stop at the first damaged file instead of rejecting it and going on

    def validate(self, key: str) -> None:
        _check(len(self.sources) > 0, f"{key}.sources", "at least one source is needed")
        _check(self.rows_per_shard > 0, f"{key}.rows_per_shard", "must be > 0")
        for i, source in enumerate(self.sources):
            source.validate(f"{key}.sources[{i}]")


@dataclass
class CurateConfig:
    allowed_licenses: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED))
    unicode_form: str = "NFC"
    min_chars: int = 200
    quality: QualityConfig = field(default_factory=QualityConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    executor: str = "local"  # local (process pool) | ray
    workers: int = 0  # local processes; 0 = all cores
    ray_address: str | None = None  # None: a local Ray; "auto" or host:port: a cluster
    task_rows: int = 2000  # documents per task (whole Parquet row groups)

    def validate(self, key: str) -> None:
        _check(self.unicode_form in ("NFC", "NFKC"), f"{key}.unicode_form", "NFC or NFKC")
        _check(self.min_chars >= 0, f"{key}.min_chars", "must be >= 0")
        _check(self.executor in ("local", "ray"), f"{key}.executor", "local or ray")
        _check(self.workers >= 0, f"{key}.workers", "must be >= 0 (0 = all cores)")
        _check(self.task_rows > 0, f"{key}.task_rows", "must be > 0")
        self.quality.validate(f"{key}.quality")
        self.near_dedup.validate(f"{key}.near_dedup")
        for i, lic in enumerate(self.allowed_licenses):
            spdx = normalize_license(lic)
            _check(spdx != "LicenseRef-Unknown", f"{key}.allowed_licenses[{i}]",
                   f"unknown license {lic!r}")
            self.allowed_licenses[i] = spdx


@dataclass
class TokenizerConfig:
    vocab_size: int = 8192
    min_frequency: int = 2
    max_train_chars: int = 50_000_000  # cap on text fed to the BPE trainer

    def validate(self, key: str) -> None:
        _check(300 <= self.vocab_size <= 1 << 20, f"{key}.vocab_size",
               f"must be between 300 and {1 << 20}, got {self.vocab_size}")
        _check(self.min_frequency >= 1, f"{key}.min_frequency", "must be >= 1")


@dataclass
class TokenizeConfig:
    val_fraction: float = 0.05  # share of passages held out for validation
    passage_chars: int = 4000  # documents are split into passages for the val split
    # also pack the synth stage's train-split samples (ChatML text, sources `synth/<task>`),
    # e.g. for a mixture phase that mixes instruction data into pretraining; their eval split
    # stays out of every token shard
    synth: bool = False

    def validate(self, key: str) -> None:
        _check(0.0 < self.val_fraction < 0.5, f"{key}.val_fraction", "must be in (0, 0.5)")
        _check(self.passage_chars >= 200, f"{key}.passage_chars", "must be >= 200")


@dataclass
class ModelConfig:
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 768
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = True

    def validate(self, key: str) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size", "max_seq_len"):
            _check(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
        _check(self.num_heads % self.num_kv_heads == 0, f"{key}.num_kv_heads",
               f"must divide num_heads ({self.num_heads}), got {self.num_kv_heads}")


@dataclass
class PretrainConfig:
    max_steps: int = 1000
    seq_len: int = 256
    batch_size: int = 16  # sequences per micro-batch (per process under torchrun)
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
    mtp: MTPConfig = field(default_factory=MTPConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # sources weighted per phase ([[pretrain.mixture.phases]]); none: the natural mix
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    eval_every: int = 100
    eval_tokens: int = 65_536
    checkpoint_every: int = 100
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 autocast where supported) | float32 | bfloat16
    compile: bool = False  # torch.compile the training step (worth it on GPUs)
    # under torchrun: ddp (a whole model per process) or fsdp (parameters, gradients and
    # optimizer state sharded over processes, for models too large for one device)
    parallel: str = "ddp"

    def validate(self, key: str) -> None:
        for name in ("max_steps", "seq_len", "batch_size", "grad_accum", "eval_every",
                     "eval_tokens", "checkpoint_every", "log_every"):
            _check(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
        _check(self.schedule in ("cosine", "wsd"), f"{key}.schedule",
               f"cosine or wsd, got {self.schedule!r}")
        _check(0 <= self.min_lr_ratio <= 1, f"{key}.min_lr_ratio", "must be in [0, 1]")
        _check(0 <= self.warmup_steps < self.max_steps, f"{key}.warmup_steps",
               "must be >= 0 and < max_steps")
        _check(0 < self.decay_fraction <= 1, f"{key}.decay_fraction", "must be in (0, 1]")
        if self.schedule == "wsd":
            _check(self.warmup_steps + round(self.decay_fraction * self.max_steps)
                   <= self.max_steps, f"{key}.decay_fraction",
                   "warmup and decay together exceed max_steps")
        _check(self.grad_clip > 0, f"{key}.grad_clip", "must be > 0")
        _check(self.device in ("auto", "cpu", "cuda", "mps"), f"{key}.device",
               "auto, cpu, cuda or mps")
        _check(self.dtype in ("auto", "float32", "bfloat16"), f"{key}.dtype",
               "auto, float32 or bfloat16")
        _check(self.parallel in ("ddp", "fsdp"), f"{key}.parallel",
               f"ddp or fsdp, got {self.parallel!r}")
        self.optimizer.validate(f"{key}.optimizer")
        self.mtp.validate(f"{key}.mtp")
        self.distill.validate(f"{key}.distill")
        self.mixture.validate(f"{key}.mixture")


@dataclass
class GenerateConfig:
    prompt: str = "Il était une fois"
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int = 0

    def validate(self, key: str) -> None:
        _check(self.max_new_tokens > 0, f"{key}.max_new_tokens", "must be > 0")
        _check(self.temperature >= 0, f"{key}.temperature", "must be >= 0 (0 is greedy)")
        _check(self.top_k >= 0, f"{key}.top_k", "must be >= 0 (0 disables)")
        _check(0 < self.top_p <= 1, f"{key}.top_p", "must be in (0, 1]")


EVAL_TASK_KINDS = ("bpb", "mc", "ocr", "rag", "copy")  # fournil.eval.tasks


@dataclass
class EvalConfig:
    """`fournil eval --task/--report`: what to score (see fournil.eval.tasks) and how much."""

    tasks: list[str] = field(default_factory=list)  # bpb, mc:PATH, ocr[:PATH], rag[:PATH], copy
    max_items: int = 200  # per task, the first ones in file order
    max_new_tokens: int = 256  # longest answer (OCR corrections, cited answers)
    bpb_bytes_per_source: int = 100_000  # held-out text scored per source

    def validate(self, key: str) -> None:
        for i, task in enumerate(self.tasks):
            _check(task.partition(":")[0] in EVAL_TASK_KINDS, f"{key}.tasks[{i}]",
                   f"expected bpb, mc:PATH, ocr[:PATH], rag[:PATH] or copy[:PATH], got {task!r}")
        for name in ("max_items", "max_new_tokens", "bpb_bytes_per_source"):
            _check(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")


CORE_STAGES = ("ingest", "curate", "tokenizer", "tokenize", "pretrain", "eval", "export")
PIPELINE = ("ingest", "curate", "synth", "tokenizer", "tokenize", "pretrain", "eval", "sft", "dpo",
            "export")  # the order bake runs them in


@dataclass
class Recipe:
    name: str
    seed: int = 1337
    out_dir: str | None = None  # default: runs/<name> under the current directory
    # what `fournil bake` runs: the core stages, plus synth / sft / dpo when named
    stages: list[str] = field(default_factory=lambda: list(CORE_STAGES))
    ingest: IngestConfig = field(default_factory=IngestConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    file: Path | None = None  # the file it was loaded from (not a TOML key)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "validate"):
                value.validate(f.name)
        for i, name in enumerate(self.stages):
            _check(name in PIPELINE, f"stages[{i}]", f"unknown stage {name!r} "
                   f"({', '.join(PIPELINE)})")
        missing = [name for name in CORE_STAGES if name not in self.stages]
        _check(not missing, "stages", f"{', '.join(missing)} cannot be left out")
        _check(self.pretrain.seq_len <= self.model.max_seq_len, "pretrain.seq_len",
               f"must be <= model.max_seq_len ({self.model.max_seq_len})")

    @property
    def root(self) -> Path:
        return self.file.parent if self.file else Path.cwd()

    def resolve(self, path: str) -> Path:
        """A path from the recipe, relative to the recipe file."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root / p).resolve()

    def teacher_dir(self) -> Path | None:
        """`pretrain.distill.teacher`, resolved; None without distillation."""
        teacher = self.pretrain.distill.teacher
        return self.resolve(teacher) if teacher else None

    def run_dir(self, override: str | Path | None = None) -> Path:
        if override:
            return Path(override).resolve()
        return Path(self.out_dir).resolve() if self.out_dir else Path.cwd() / "runs" / self.name

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("file")
        return data


def _is_dataclass_type(tp: object) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value: object, tp: object, key: str) -> object:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(value, args[0], key)
    if origin is dict:
        _check(isinstance(value, dict), key, f"expected a table, got {type(value).__name__}")
        _, item_type = typing.get_args(tp)
        return {k: _convert(v, item_type, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        _check(isinstance(value, list), key, f"expected a list, got {type(value).__name__}")
        (item_type,) = typing.get_args(tp)
        return [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if _is_dataclass_type(tp):
        _check(isinstance(value, dict), key, f"expected a table, got {type(value).__name__}")
        return _build(tp, value, key)
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        _check(ok, key, f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _check(ok, key, f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if tp is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported recipe type {tp!r} at {key}")


def _build(cls: type, data: dict, prefix: str) -> object:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "file"}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise RecipeError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required key is missing
        raise RecipeError(f"{prefix or 'recipe'}: {e}") from None


def recipe_from_dict(data: dict, path: Path | None = None) -> Recipe:
    recipe = _build(Recipe, data, "")
    recipe.file = path
    recipe.validate()
    return recipe


def _merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, table by table; any other value (lists too) replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A recipe file's tables; `extends = "other.toml"` (relative to the file) starts from
    that recipe's and overrides what this file sets. The base's relative paths must resolve
    the same from both files: keep them side by side, as in recipes/."""
    if not path.exists():
        raise RecipeError(f"{path}: recipe not found")
    if path in seen:
        raise RecipeError(f"{path}: extends itself through {' -> '.join(map(str, seen))}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from None
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"{path}: extends: expected a recipe file name, got {base!r}")
    return _merge(_read_toml((path.parent / base).resolve(), (*seen, path)), data)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path).resolve()
    data = _read_toml(path)
    try:
        return recipe_from_dict(data, path)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
