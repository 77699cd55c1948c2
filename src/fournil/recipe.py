"""Recipes: one TOML file describes a whole bake. Validated on load.

A recipe has a few keys of its own (`name`, `seed`, `out_dir`, `stages`), the model's shape
(`[model]`), the sampling defaults (`[generate]`), and a section per stage that has settings,
named after the stage (`[curate]`, `[pretrain]`, ...): each stage owns its settings in its
package's config.py, and `fournil.stages` lists the stages. This module only composes them,
reads TOML, resolves `extends` and applies `--set key=value` overrides.

Every value is checked here, once, when the recipe is loaded: unknown keys, wrong types and
out-of-range values are errors that name the key (`pretrain.optimizer.lr: must be > 0, got
-1`), before any stage runs. Paths inside a recipe are relative to the recipe file, so a
recipe and its data can move together. Loading a recipe imports nothing heavy (no torch,
numpy or pyarrow): `python -X importtime -c "import fournil.recipe"` shows it.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fournil.core.validation import RecipeError
from fournil.core.validation import check as _check
from fournil.model.config import GenerateConfig, TransformerConfig
from fournil.stages import CORE_STAGES, STAGE_NAMES, STAGES

__all__ = ["RecipeError", "Recipe", "load_recipe", "recipe_from_dict", "apply_overrides"]

# the sections: the model's, then each stage's settings, in pipeline order
SECTIONS: dict[str, type] = {"model": TransformerConfig, "generate": GenerateConfig,
                             **{s.name: s.config for s in STAGES if s.config is not None}}
RENAMED = {"tokenize": "tokens"}  # old section and stage names, for a helpful error


class _RecipeMethods:
    """What a recipe can do besides holding its sections (the dataclass below adds them)."""

    def validate(self) -> None:
        for name in SECTIONS:
            getattr(self, name).validate(name)
        for i, name in enumerate(self.stages):
            _check(name in STAGE_NAMES, f"stages[{i}]", f"unknown stage {name!r} "
                   f"({', '.join(STAGE_NAMES)})" + _renamed(name))
        if self.runs("correct"):  # found now, not after ingest and curate have run
            _check(bool(self.correct.model), "correct.model",
                   "the recipe runs the correct stage: name the correction model (a model "
                   "folder or a .gguf file)")
        if self.runs("base"):  # the shape and the tokenizer are the base model's
            _check(bool(self.base.model), "base.model",
                   "the recipe runs the base stage: name the model to start from")
            _check(self.model == TransformerConfig(), "model",
                   "the model's shape is the base model's; leave [model] out")
            return
        _check(self.pretrain.max_steps > 0, "pretrain.max_steps",
               "must be > 0 (0, no pretraining, takes a [base] model as it is)")
        _check(self.model.vocab_size == 0, "model.vocab_size",
               "is the tokenizer's (tokenizer.vocab_size); leave it out")
        _check(self.pretrain.seq_len <= self.model.max_seq_len, "pretrain.seq_len",
               f"must be <= model.max_seq_len ({self.model.max_seq_len})")

    def runs(self, stage: str) -> bool:
        """Whether `fournil bake` runs this stage: every core stage, the others when named."""
        return stage in CORE_STAGES or stage in self.stages

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


Recipe = dataclasses.make_dataclass("Recipe", [
    ("name", str),
    ("seed", int, field(default=1337)),
    ("out_dir", str | None, field(default=None)),  # default: runs/<name> under the cwd
    # what `fournil bake` runs besides the core stages, which always run: the optional ones
    # named here (synth, sft, dpo); naming a core stage changes nothing
    ("stages", list[str], field(default_factory=lambda: list(CORE_STAGES))),
    *((name, section, field(default_factory=section)) for name, section in SECTIONS.items()),
    ("file", Path | None, field(default=None)),  # the file it was loaded from (not a key)
], bases=(_RecipeMethods,), namespace={"__module__": __name__})
Recipe.__doc__ = "A whole bake: its own keys, the model's shape, and each stage's settings."


def _renamed(name: str) -> str:
    return f"; {name!r} is now {RENAMED[name]!r}" if name in RENAMED else ""


def _is_dataclass_type(tp: object) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value: object, tp: object, key: str) -> object:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(value, args[0], key)
    if tp is dict:  # a table its section validates itself (model.rope_scaling)
        _check(isinstance(value, dict), key, f"expected a table, got {type(value).__name__}")
        return dict(value)
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
            raise RecipeError(f"{where}: unknown key (known: {', '.join(sorted(names))})"
                              + ("" if prefix else _renamed(key)))
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


def parse_override(item: str) -> tuple[list[str], object]:
    """`--set pretrain.max_steps=100`: the key's path and the TOML value (a bare word is a
    string)."""
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected key=value, e.g. pretrain.max_steps=100")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """The recipe with `--set key=value` overrides applied, validated again."""
    if not overrides:
        return recipe
    data = recipe.to_dict()
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise RecipeError(f"--set {item}: no section {k!r} in the recipe" + _renamed(k))
            node = node[k]
        node[keys[-1]] = value
    return recipe_from_dict(data, recipe.file)
