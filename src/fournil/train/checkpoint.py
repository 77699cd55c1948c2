"""Checkpoints: a folder a resumed run continues from exactly, written atomically.

`step-000100/` holds `model.safetensors` + `config.json` (the model), `optimizer.pt`,
`trainer_state.json` (step, tokens seen, RNG state), the tokenizer files and, when training
with multi-token prediction, `mtp.safetensors` (read by the trainer only: a checkpoint is also
a self-contained Qwen3 model folder for `fournil generate` and `fournil export`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from fournil.model.mtp import MTPHeads
from fournil.model.transformer import Transformer
from fournil.provenance.lineage import copy_lineage
from fournil.tokenizer.train import TOKENIZER_FILES


def save_checkpoint(directory: Path, model: Transformer, optimizer: torch.optim.Optimizer | None,
                    state: dict, tokenizer_dir: Path, mtp: MTPHeads | None = None,
                    extra: Callable[[Path], None] | None = None) -> Path:
    """`extra(folder)` writes more files (a LoRA adapter) before the checkpoint is visible."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save(tmp)
    if mtp is not None:
        mtp.save(tmp)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    state = {**state, "torch_rng": torch.get_rng_state().tolist()}
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    for name in TOKENIZER_FILES:  # a base's own chat template file too, when it has one
        if (Path(tokenizer_dir) / name).exists():
            shutil.copy2(Path(tokenizer_dir) / name, tmp / name)
    copy_lineage(tokenizer_dir, tmp)  # an imported base's lineage goes on with its weights
    if extra is not None:
        extra(tmp)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp folders are never complete)."""
    if not Path(directory).exists():
        return []
    return sorted(p for p in Path(directory).glob("step-*")
                  if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / "trainer_state.json").exists())


def load_trainer_state(directory: Path, optimizer: torch.optim.Optimizer | None) -> dict:
    state = json.loads((Path(directory) / "trainer_state.json").read_text())
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(Path(directory) / "optimizer.pt",
                                             map_location="cpu", weights_only=True))
    torch.set_rng_state(torch.tensor(state.pop("torch_rng"), dtype=torch.uint8))
    return state


def prune_checkpoints(directory: Path, keep: int) -> None:
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old)


def final_checkpoint(stage_dir: Path) -> Path:
    """The checkpoint a completed training stage (pretrain, sft, dpo) ended with."""
    manifest = json.loads((Path(stage_dir) / "manifest.json").read_text())
    return Path(stage_dir) / manifest["final_checkpoint"]
