"""A model's lineage: the open base it was trained from, as an input like a document source.

The base stage writes it beside the base's weights (`lineage.json`); every checkpoint trained
from the base and the export copy it on, so nothing trained from a base forgets where it came
from, and the model card's "model dependencies" reads it. A model trained from scratch has none.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TypedDict

LINEAGE = "lineage.json"


class FileHash(TypedDict):
    name: str
    bytes: int
    sha256: str  # of the file's bytes, as `sha256sum` prints it


class BaseLineage(TypedDict):
    name: str
    source: str  # as the recipe gave it
    files: list[FileHash]
    license: str  # SPDX, as the recipe's policy gated it
    license_raw: str | None  # as declared (the recipe, else the files)
    architecture: str  # the Hugging Face class, e.g. LlamaForCausalLM
    family: str
    parameters: int
    quantization: str | None  # a GGUF's type, dequantised to float32 on import
    training_data: list[str]  # as its authors declare it
    training_data_declared_in: str  # the recipe, the known bases' source, or "not declared"


def read_lineage(model_dir: str | Path) -> BaseLineage | None:
    """The lineage a model folder carries; None for a model trained from scratch."""
    path = Path(model_dir) / LINEAGE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def copy_lineage(source_dir: str | Path, target_dir: str | Path) -> None:
    """Carries a model's lineage on to a model made from it (a checkpoint, an export)."""
    path = Path(source_dir) / LINEAGE
    if path.exists():
        shutil.copyfile(path, Path(target_dir) / LINEAGE)
