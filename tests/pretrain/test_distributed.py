"""Pretraining under real `torchrun --nproc_per_node 2` on CPU (gloo), through the CLI: DDP and
FSDP2 give the losses and weights of one process with the same global batch, and a run
stopped at one world size continues at another on the same tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fournil.core.validation import RecipeError
from fournil.model.transformer import Transformer
from fournil.pretrain.stage import run_pretrain
from fournil.recipe import apply_overrides
from fournil.tokenizer.train import load_tokenizer
from fournil.train.checkpoint import final_checkpoint, list_checkpoints
from fournil.train.distributed import micro_batch_starts

ROOT = Path(__file__).resolve().parents[2]
# 8 steps of 2 micro-batches of 4 sequences: one micro-batch per process at world size 2
BASE = ["pretrain.max_steps=8", "pretrain.batch_size=4", "pretrain.grad_accum=2",
        "pretrain.log_every=1", "pretrain.checkpoint_every=4", "pretrain.eval_every=8",
        "pretrain.warmup_steps=2"]
ADAMW = [*BASE, 'pretrain.parallel="ddp"']
# Muon on sharded matrices (gathered for Newton-Schulz), MTP heads around sharded blocks
MUON_MTP_FSDP = [*BASE, 'pretrain.parallel="fsdp"', 'pretrain.optimizer.name="muon"',
                 "pretrain.mtp.depth=1", 'pretrain.schedule="wsd"', "pretrain.decay_fraction=0.5"]


def one_process(layout, recipe, sets: list[str], out: Path, stop_after: int | None = None):
    """run_pretrain in this process, with the recipe the CLI would build from `--set`s."""
    recipe = apply_overrides(recipe, sets)
    return run_pretrain(layout.tokens, layout.tokenizer, out, recipe.model, recipe.pretrain,
                        recipe.seed, stop_after=stop_after)


def two_processes(layout, sets: list[str], out: Path, stop_after: int | None = None) -> None:
    """`torchrun --nproc_per_node 2 -m fournil pretrain` on the smoke recipe."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "fournil", "-q", "pretrain", "-r", str(ROOT / "recipes" / "smoke.toml"),
           "--tokens", str(layout.tokens), "--tokenizer", str(layout.tokenizer),
           "--out", str(out)]
    cmd += [arg for item in sets for arg in ("--set", item)]
    cmd += ["--stop-after", str(stop_after)] if stop_after is not None else []
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), steps  # one writer: no line twice
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def initial_weights(layout, recipe) -> dict[str, torch.Tensor]:
    """The weights every run starts from: the model the trainer builds from the seed."""
    vocab = load_tokenizer(layout.tokenizer).get_vocab_size()
    torch.manual_seed(recipe.seed)
    return Transformer(recipe.model.with_vocab(vocab)).state_dict()


def assert_same_run(run: Path, reference: Path, start: dict[str, torch.Tensor]) -> None:
    """The same run up to the order of float32 reductions, judged by what that order can
    change.

    Runs differ in how sums are blocked: two threads in one process against one per process
    under torchrun, and AVX-512 kernels block the inner dimension otherwise than AVX2 ones.
    That moves a loss by a few float32 ulps (~1e-7 relative, measured), far inside 1e-5. It
    cannot be bounded per weight: Adam divides each gradient element by its own RMS, so an
    element whose gradient is at rounding-noise level may step by up to lr either way. Such
    elements are few (<= 0.2% of a matrix differ by more than 1e-6 after 8 steps on an Intel
    Xeon, none by more than ~1e-6 on an AMD EPYC), so each tensor's update, final minus
    initial weights, agrees in norm: measured 2e-5 relative at most. The bound 1e-3 leaves
    room for more of them, while a real difference is far above it (one micro-batch of the
    two left out changes every tensor's update by >= 36%)."""
    a, b = losses(run), losses(reference)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert all(a[s] == pytest.approx(b[s], rel=1e-5) for s in a), {s: (a[s], b[s]) for s in a}
    wa = Transformer.load(final_checkpoint(run)).state_dict()
    wb = Transformer.load(final_checkpoint(reference)).state_dict()
    assert wa.keys() == wb.keys() == start.keys()
    gap = {k: ((wa[k] - wb[k]).norm() / (wb[k] - start[k]).norm()).item() for k in wa}
    assert max(gap.values()) < 1e-3, max(gap.items(), key=lambda kv: kv[1])


@pytest.fixture(scope="module")
def reference(smoke_recipe, smoke_bake, tmp_path_factory):
    """The uninterrupted one-process run of each recipe variant, made once."""
    _, layout = smoke_bake
    runs: dict[str, Path] = {}

    def get(name: str, sets: list[str]) -> Path:
        if name not in runs:
            runs[name] = tmp_path_factory.mktemp("reference") / name
            one_process(layout, smoke_recipe, sets, runs[name])
        return runs[name]

    return get


def test_ddp_on_two_processes_is_one_process_with_the_same_batch(reference, smoke_recipe,
                                                                    smoke_bake, tmp_path):
    _, layout = smoke_bake
    two_processes(layout, ADAMW, tmp_path / "ddp")
    assert_same_run(tmp_path / "ddp", reference("adamw", ADAMW),
                    initial_weights(layout, smoke_recipe))
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["counts"]["tokens_seen"] == 8 * 8 * 64


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)], ids=["2-then-1", "1-then-2"])
def test_resume_on_another_world_size(first, then, reference, smoke_recipe, smoke_bake,
                                      tmp_path):
    _, layout = smoke_bake
    out = tmp_path / "pretrain"
    for world_size, stop_after in ((first, 3), (then, None)):
        if world_size == 2:
            two_processes(layout, ADAMW, out, stop_after=stop_after)
        else:
            one_process(layout, smoke_recipe, ADAMW, out, stop_after=stop_after)
        if stop_after is not None:
            partial = out.with_name(out.name + ".partial")
            assert list_checkpoints(partial / "checkpoints")[-1].name == "step-000003"
    assert_same_run(out, reference("adamw", ADAMW), initial_weights(layout, smoke_recipe))


def test_fsdp_with_muon_and_mtp_between_one_process_runs(reference, smoke_recipe, smoke_bake,
                                                         tmp_path):
    """FSDP2 on gloo, between two one-process runs: steps 1-3 on one process; 4-6 sharded over
    two (the full checkpoint cut into shards, Muon gathering each matrix for Newton-Schulz,
    MTP heads, the DTensor gradient clip, a checkpoint gathered back to rank 0); 7-8 on one
    process again. Together: the uninterrupted one-process run."""
    _, layout = smoke_bake
    out = tmp_path / "pretrain"
    one_process(layout, smoke_recipe, MUON_MTP_FSDP, out, stop_after=3)
    two_processes(layout, MUON_MTP_FSDP, out, stop_after=6)
    one_process(layout, smoke_recipe, MUON_MTP_FSDP, out)
    assert_same_run(out, reference("muon-mtp", MUON_MTP_FSDP),
                    initial_weights(layout, smoke_recipe))


def test_each_step_covers_the_same_samples_at_any_world_size():
    batch, accum = 3, 4
    for step in (0, 5):
        expected = list(range(step * batch * accum, (step + 1) * batch * accum))
        for world_size in (1, 2, 4):
            samples = [first + j for rank in range(world_size)
                       for first in micro_batch_starts(step, batch, accum, rank, world_size)
                       for j in range(batch)]
            assert samples == expected  # contiguous runs, rank by rank
    with pytest.raises(RecipeError, match="pretrain.grad_accum"):
        micro_batch_starts(0, batch, accum, rank=0, world_size=3)
