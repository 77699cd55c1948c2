"""Pretraining on the smoke corpus: exact resume (AdamW + cosine, and Muon + WSD + MTP heads),
deterministic data order, checkpoints, schedules, MTP heads kept out of the export, and
distillation from a teacher through the real stage."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fournil.model.mtp import FILENAME as MTP_FILE
from fournil.model.transformer import Transformer
from fournil.pretrain.stage import run_pretrain
from fournil.stages import BY_NAME, CORE_STAGES, RunLayout, StageContext
from fournil.tokens.loader import WindowSampler, get_batch
from fournil.tokens.shards import TokenDataset
from fournil.train.checkpoint import final_checkpoint, list_checkpoints
from fournil.train.config import DistillConfig, MTPConfig, OptimizerConfig
from fournil.train.schedule import warmup_cosine, warmup_stable_decay


def _losses(pretrain_dir):
    rows = [json.loads(line) for line in (pretrain_dir / "metrics.jsonl").read_text().split("\n")
            if line]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


MUON_WSD_MTP = {"optimizer": OptimizerConfig(name="muon", lr=3e-3, muon_lr=0.02),
                "schedule": "wsd", "decay_fraction": 0.5, "mtp": MTPConfig(depth=1)}


@pytest.mark.parametrize("recipe", [{}, MUON_WSD_MTP], ids=["adamw-cosine", "muon-wsd-mtp"])
def test_resume_gives_the_same_losses(recipe, smoke_recipe, smoke_bake, tmp_path):
    _, layout = smoke_bake
    cfg = dataclasses.replace(smoke_recipe.pretrain, max_steps=12, checkpoint_every=4,
                              log_every=1, eval_every=6, warmup_steps=2, **recipe)
    args = (layout.tokens, layout.tokenizer)
    straight = run_pretrain(*args, tmp_path / "straight", smoke_recipe.model, cfg, seed=7)

    assert run_pretrain(*args, tmp_path / "resumed", smoke_recipe.model, cfg, seed=7,
                        stop_after=5) is None
    partial = tmp_path / "resumed.partial"
    assert not (tmp_path / "resumed").exists()  # an unfinished stage is never visible as done
    assert [p.name for p in list_checkpoints(partial / "checkpoints")][-1] == "step-000005"
    resumed = run_pretrain(*args, tmp_path / "resumed", smoke_recipe.model, cfg, seed=7)

    a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    assert resumed["counts"] == straight["counts"]
    wa = Transformer.load(final_checkpoint(tmp_path / "straight")).state_dict()
    wb = Transformer.load(final_checkpoint(tmp_path / "resumed")).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    if cfg.mtp.depth:
        rows = [json.loads(line) for line in
                (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
        assert all(r["mtp"] > 0 for r in rows if "loss" in r)  # the auxiliary loss was on


def test_mtp_heads_train_and_are_left_out_of_the_export(smoke_recipe, smoke_bake, tmp_path):
    _, layout = smoke_bake
    cfg = dataclasses.replace(smoke_recipe.pretrain, max_steps=6, checkpoint_every=3,
                              eval_every=6, warmup_steps=1, mtp=MTPConfig(depth=2))
    for stage in ("ingest", "curate", "tokenizer", "tokens", "eval"):  # the smoke run's
        (tmp_path / stage).symlink_to(getattr(layout, stage))
    run_pretrain(layout.tokens, layout.tokenizer, tmp_path / "pretrain", smoke_recipe.model,
                 cfg, seed=1)
    ckpt = final_checkpoint(tmp_path / "pretrain")
    assert (ckpt / MTP_FILE).exists()  # resumable with its heads
    ctx = StageContext(dataclasses.replace(smoke_recipe, stages=list(CORE_STAGES)),
                       RunLayout(tmp_path))
    for stage in ("report", "export"):
        BY_NAME[stage].entry()(ctx)
    weights = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert not any("mtp" in k or "depths" in k for k in weights)
    assert set(weights) == set(Transformer.load(ckpt).weights_for_save())
    assert not (tmp_path / "export" / MTP_FILE).exists()


def test_distillation_through_the_stage(smoke_recipe, smoke_bake, tmp_path):
    """A student distilled (alpha=1: the KL term alone) from the smoke model learns from it:
    its data cross-entropy falls although it never sees the data's targets directly."""
    _, layout = smoke_bake
    teacher = final_checkpoint(layout.pretrain)
    cfg = dataclasses.replace(smoke_recipe.pretrain, max_steps=20, eval_every=20, log_every=1,
                              distill=DistillConfig(teacher=str(teacher), alpha=1.0))
    manifest = run_pretrain(layout.tokens, layout.tokenizer, tmp_path / "student",
                            smoke_recipe.model, cfg, seed=3, teacher_dir=teacher)
    assert "teacher" in manifest["inputs"]
    rows = [json.loads(line) for line in
            (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    kl = [r["kl"] for r in rows if "kl" in r]
    ce = [r["loss"] for r in rows if "kl" in r]
    assert kl[-1] < 0.2 * kl[0] and ce[-1] < ce[0] - 0.5
    with pytest.raises(ValueError, match="teacher"):
        run_pretrain(layout.tokens, layout.tokenizer, tmp_path / "other", smoke_recipe.model,
                     cfg, seed=3)  # the recipe names a teacher, none was resolved


def test_loss_goes_down_and_is_logged(smoke_bake):
    _, layout = smoke_bake
    losses = _losses(layout.pretrain)
    steps = sorted(losses)
    assert losses[steps[-1]] < losses[steps[0]] - 0.5
    manifest = json.loads((layout.pretrain / "manifest.json").read_text())
    assert np.isfinite(manifest["counts"]["val_bpb"]) and manifest["counts"]["val_bpb"] > 0
    ckpt = final_checkpoint(layout.pretrain)
    for name in ("model.safetensors", "config.json", "optimizer.pt", "trainer_state.json",
                 "tokenizer.json"):
        assert (ckpt / name).exists(), name


def test_batches_are_a_function_of_the_sample_index(smoke_bake):
    _, layout = smoke_bake
    data = TokenDataset(layout.tokens / "train")
    first = WindowSampler(len(data), 64, seed=3)
    again = WindowSampler(len(data), 64, seed=3)
    x1, y1 = get_batch(data, first, 40, 4)
    get_batch(data, again, 999, 4)  # a different position first: no hidden state matters
    x2, y2 = get_batch(data, again, 40, 4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are the inputs shifted by one
    other = WindowSampler(len(data), 64, seed=4)
    assert not torch.equal(get_batch(data, other, 40, 4)[0], x1)


def test_one_epoch_visits_distinct_windows(smoke_bake):
    _, layout = smoke_bake
    n = len(TokenDataset(layout.tokens / "train"))
    sampler = WindowSampler(n, 64, seed=0)
    starts = [sampler.start(i) for i in range(sampler.windows_per_epoch)]
    assert len(set(starts)) == len(starts)
    assert max(starts) + 65 <= n


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert abs(warmup_cosine(100, 100, 10, 0.1) - 0.1) < 1e-9


def test_warmup_stable_decay():
    lrs = [warmup_stable_decay(s, 100, 10, 0.0, decay_fraction=0.2) for s in range(100)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0
    assert set(lrs[9:80]) == {1.0}  # the plateau
    assert all(a > b for a, b in zip(lrs[79:], lrs[80:], strict=False))  # a linear decay
    assert lrs[80] == pytest.approx(1 - 1 / 20) and lrs[99] == 0.0
