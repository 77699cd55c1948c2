"""Stage bookkeeping: manifests, input fingerprints, skip-if-done, atomic completion.

A stage builds its output in `<dir>.partial/` and renames it to `<dir>/` only after writing
`manifest.json`, so a folder without the `.partial` suffix is always complete. The manifest
records the fingerprint of the inputs and the parameters; when both match, the stage is
skipped. Downstream stages fingerprint an upstream stage by its manifest's `output_hash`,
which is cheap and changes whenever the upstream output does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

from fournil import __version__

MANIFEST = "manifest.json"
log = logging.getLogger("fournil")


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, as `sha256sum` prints it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(paths: list[Path], root: Path | None = None) -> str:
    """sha256 over (relative name, content) of each file, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(paths):
        name = str(path.relative_to(root)) if root else path.name
        h.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def hash_tree(directory: Path, exclude: tuple[str, ...] = (MANIFEST,)) -> str:
    files = [p for p in Path(directory).rglob("*") if p.is_file() and p.name not in exclude]
    return hash_files(files, root=Path(directory))


def hash_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def read_manifest(directory: str | Path) -> dict | None:
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def upstream_hash(directory: str | Path) -> str:
    """The fingerprint of a completed upstream stage (its output hash)."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"{directory}: no {MANIFEST}; run the stage that makes it first")
    return manifest["output_hash"]


def write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


class Timings(TypedDict):
    started: str  # UTC, ISO 8601
    seconds: float


class Manifest(TypedDict):
    """What every stage's manifest.json holds; each stage's own type (the return type of its
    `run`) adds `counts` and what else it records, and docs/DESIGN.md lists them all."""

    stage: str
    fournil_version: str
    key: str  # the fingerprint of the stage's inputs and parameters
    inputs: dict[str, str]
    params: dict[str, Any]  # the stage's own business: no other stage reads them
    timings: Timings
    output_hash: str


def mismatches(value: object, tp: object, where: str = "manifest") -> list[str]:
    """Where `value` differs from the type `tp` (a TypedDict, dict[str, X], list[X], a union,
    int, float, str, bool, Any): the keys a stage's typed manifest declares and that its
    manifest.json lacks, or holds with another type. Empty when it conforms."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return []
    if origin in (typing.Union, types.UnionType):
        return [] if any(not mismatches(value, a, where) for a in args) else [
            f"{where}: {type(value).__name__} is none of {tp}"]
    if isinstance(tp, type) and typing.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        hints = typing.get_type_hints(tp)
        missing = [f"{where}.{k}: missing" for k in sorted(tp.__required_keys__ - set(value))]
        return missing + [e for k, t in hints.items() if k in value
                          for e in mismatches(value[k], t, f"{where}.{k}")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        return [e for k, v in value.items() for e in mismatches(v, args[1], f"{where}.{k}")]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [e for i, v in enumerate(value) for e in mismatches(v, args[0], f"{where}[{i}]")]
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is type(None):
        ok = value is None
    else:
        ok = isinstance(value, tp)
    return [] if ok else [f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}"]


@dataclass
class Stage:
    """One run of a stage into `path`, identified by its inputs and parameters."""

    name: str
    path: Path
    inputs: dict[str, str]  # input name -> fingerprint
    params: dict
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.partial = self.path.with_name(self.path.name + ".partial")

    @property
    def key(self) -> str:
        return hash_json({"stage": self.name, "inputs": self.inputs, "params": self.params})

    def done(self) -> dict | None:
        """The manifest of a completed run with the same inputs and parameters, else None."""
        manifest = read_manifest(self.path)
        if manifest and manifest.get("key") == self.key:
            log.info("%s: up to date in %s, skipped", self.name, self.path)
            return manifest
        return None

    def start(self, resume: bool = False) -> Path:
        """The folder to write into. With `resume`, a partial run of the same key is kept."""
        key_file = self.partial / "stage-key"
        same_run = key_file.exists() and key_file.read_text() == self.key
        if self.partial.exists() and not (resume and same_run):
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        key_file.write_text(self.key)
        self.started = time.time()
        return self.partial

    def finish(self, counts: dict, **extra: object) -> dict:
        """Write the manifest and make the output visible under its final name."""
        (self.partial / "stage-key").unlink(missing_ok=True)
        manifest = {
            "stage": self.name,
            "fournil_version": __version__,
            "key": self.key,
            "inputs": self.inputs,
            "params": self.params,
            "counts": counts,
            **extra,
            "timings": {
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "seconds": round(time.time() - self.started, 3),
            },
            "output_hash": hash_tree(self.partial),
        }
        write_json_atomic(self.partial / MANIFEST, manifest)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.partial, self.path)
        log.info("%s: done in %.1fs -> %s", self.name, manifest["timings"]["seconds"], self.path)
        return manifest


class Context(Protocol):
    """What a stage's `run(ctx)` is given (`fournil.stages.StageContext` is the one bake and the
    CLI make): the recipe, the verb's options, and the run's folders."""

    recipe: Any  # fournil.recipe.Recipe
    options: dict[str, Any]
    pipeline: tuple[str, ...]  # the stages the recipe runs, in the order bake runs them

    def option(self, name: str, default: Any = None) -> Any:
        """The verb's `--<name>`, else `default` (always `default` under bake)."""

    def folder(self, stage: str, option: str | None = None) -> Path:
        """A stage's folder of this run, or the path the verb's `--<option>` gives."""

    def out(self, stage: str) -> Path:
        """Where this stage writes: `--out`, else `<run>/<stage>`."""

    def documents(self) -> Path:
        """The run's documents (the verb's --input, else correct/ when the recipe runs the
        correct stage, else curate/): what the stages after them read."""
