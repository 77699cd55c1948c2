"""The pretrain stage: next-token prediction on packed token shards.

AdamW or Muon (muon.py), a cosine or warmup-stable-decay schedule (schedule.py), gradient
clipping and accumulation, bf16 autocast on GPUs, optional multi-token prediction heads and
logit distillation from a teacher (objective.py), optional torch.compile. Everything that
decides a step (the batch, the learning rate) is a function of the step number and the seed,
and checkpoints hold the optimizer state and the MTP heads, so a resumed run continues with
exactly the losses the uninterrupted run would have had.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from fournil.data.loader import WindowSampler, get_batch
from fournil.data.token_shards import TokenDataset
from fournil.eval.bpb import HeldOut, bits_per_byte
from fournil.model.config import TransformerConfig
from fournil.model.mtp import MTPHeads
from fournil.model.transformer import Transformer
from fournil.recipe import ModelConfig, PretrainConfig
from fournil.stage import Stage, hash_tree, upstream_hash
from fournil.tokenizer.train import load_tokenizer, token_byte_lengths
from fournil.train.checkpoint import (
    list_checkpoints,
    load_trainer_state,
    prune_checkpoints,
    save_checkpoint,
)
from fournil.train.device import autocast_for, pick_device
from fournil.train.distill import load_teacher
from fournil.train.muon import apply_lr_multiplier, make_optimizer
from fournil.train.objective import PretrainObjective
from fournil.train.schedule import lr_multiplier


def final_checkpoint(pretrain_dir: Path) -> Path:
    """The checkpoint a completed pretrain stage ended with."""
    manifest = json.loads((Path(pretrain_dir) / "manifest.json").read_text())
    return Path(pretrain_dir) / manifest["final_checkpoint"]


class MetricsLog:
    """metrics.jsonl; on resume, lines past the resumed step are dropped (they will recur)."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, **row: object) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def run_pretrain(tokens_dir: Path, tokenizer_dir: Path, out_dir: Path, model_cfg: ModelConfig,
                 cfg: PretrainConfig, seed: int, stop_after: int | None = None,
                 teacher_dir: Path | None = None) -> dict | None:
    """Train, resuming from the stage's latest checkpoint. Returns the manifest when done,
    None when stopped early by `stop_after` (the run can be continued later).
    `teacher_dir` is `cfg.distill.teacher` resolved (recipe paths are relative to the recipe)."""
    if (teacher_dir is None) != (cfg.distill.teacher is None):
        raise ValueError("pretrain.distill.teacher and teacher_dir go together")
    inputs = {"tokens": upstream_hash(tokens_dir), "tokenizer": upstream_hash(tokenizer_dir)}
    if teacher_dir is not None:
        inputs["teacher"] = hash_tree(Path(teacher_dir))
    stage = Stage("pretrain", out_dir, inputs=inputs,
                  params={"model": dataclasses.asdict(model_cfg),
                          "pretrain": dataclasses.asdict(cfg), "seed": seed})
    if manifest := stage.done():
        return manifest
    work = stage.start(resume=True)
    ckpt_dir = work / "checkpoints"
    device = pick_device(cfg.device)
    autocast = autocast_for(device, cfg.dtype)

    tokenizer = load_tokenizer(tokenizer_dir)
    token_bytes = token_byte_lengths(tokenizer)
    config = TransformerConfig.from_model_config(model_cfg, tokenizer.get_vocab_size())
    torch.manual_seed(seed)
    model = Transformer(config).to(device)
    mtp = MTPHeads(config, cfg.mtp.depth).to(device) if cfg.mtp.depth else None
    teacher = (load_teacher(teacher_dir, tokenizer_dir, device=device)
               if teacher_dir is not None else None)
    objective = PretrainObjective(model, mtp, cfg.mtp.weight, teacher, cfg.distill)
    optimizer = make_optimizer([model, mtp] if mtp is not None else model, cfg.optimizer)
    state = {"step": 0, "tokens_seen": 0}
    if checkpoints := list_checkpoints(ckpt_dir):
        model.load_state_dict(Transformer.load(checkpoints[-1]).state_dict())
        if mtp is not None:
            mtp.load(checkpoints[-1])
        state = load_trainer_state(checkpoints[-1], optimizer)
        tqdm.write(f"pretrain: resuming from {checkpoints[-1].name} (step {state['step']})")
    step_loss = torch.compile(objective) if cfg.compile else objective
    trained = list(objective.parameters())

    train = TokenDataset(Path(tokens_dir) / "train")
    sampler = WindowSampler(len(train), cfg.seq_len, seed)
    held_out = HeldOut(Path(tokens_dir) / "val", cfg.eval_tokens)
    metrics = MetricsLog(work / "metrics.jsonl", state["step"])
    tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
    n_params = model.num_parameters()
    extras = [f"MTP depth {cfg.mtp.depth}"] if mtp is not None else []
    extras += [f"distilling from {teacher_dir}"] if teacher is not None else []
    tqdm.write(f"pretrain: {n_params / 1e6:.2f}M parameters, {len(train):,} train tokens, "
               f"{tokens_per_step:,} tokens/step, {cfg.max_steps} steps on {device}, "
               + ", ".join([f"{cfg.optimizer.name} + {cfg.schedule}", *extras]))

    def evaluate(step: int) -> dict:
        result = bits_per_byte(model, held_out, token_bytes, cfg.seq_len, cfg.batch_size,
                               device, autocast)
        metrics.write(step=step, val_loss=result["loss"], val_bpb=result["bpb"],
                      tokens_seen=state["tokens_seen"])
        tqdm.write(f"step {step}: val loss {result['loss']:.4f}, val bpb {result['bpb']:.4f}")
        return result

    def checkpoint(step: int) -> Path:
        path = save_checkpoint(ckpt_dir / f"step-{step:06d}", model, optimizer, state,
                               tokenizer_dir, mtp)
        prune_checkpoints(ckpt_dir, keep=2)
        return path

    model.train()
    val, train_loss = None, None
    bar = tqdm(total=cfg.max_steps, initial=state["step"], desc="pretrain", unit="step",
               mininterval=2.0)
    t_last, tokens_last = time.time(), state["tokens_seen"]
    while state["step"] < cfg.max_steps:
        step = state["step"]
        multiplier = lr_multiplier(step, cfg.max_steps, cfg.schedule, cfg.warmup_steps,
                                   cfg.min_lr_ratio, cfg.decay_fraction)
        apply_lr_multiplier(optimizer, multiplier)
        sums: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            first = (step * cfg.grad_accum + micro) * cfg.batch_size
            x, y = get_batch(train, sampler, first, cfg.batch_size, device)
            with autocast:
                loss, parts = step_loss(x, y)
            (loss / cfg.grad_accum).backward()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value.item() / cfg.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step = step + 1
        state["tokens_seen"] += tokens_per_step
        train_loss = sums["ce"]  # the data's cross-entropy, whatever else is minimised
        if not all(math.isfinite(v) for v in sums.values()):
            raise FloatingPointError(f"pretrain: loss is {sums} at step {step}; lower "
                                     "pretrain.optimizer.lr (or muon_lr) or check the data")
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            now = time.time()
            tok_s = (state["tokens_seen"] - tokens_last) / max(now - t_last, 1e-9)
            t_last, tokens_last = now, state["tokens_seen"]
            bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            extra = {k: v for k, v in sums.items() if k != "ce"}
            metrics.write(step=step, loss=train_loss, **extra, lr_multiplier=multiplier,
                          grad_norm=float(grad_norm), tokens_seen=state["tokens_seen"],
                          tokens_per_s=round(tok_s, 1))
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            val = evaluate(step)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            checkpoint(step)
        if stop_after is not None and step >= stop_after and step < cfg.max_steps:
            checkpoint(step)
            bar.close()
            return None
    bar.close()
    if val is None:  # resumed at the very end: the final eval was logged before the stop
        val = evaluate(state["step"])
    last = list_checkpoints(ckpt_dir)[-1]
    return stage.finish(
        {"steps": state["step"], "tokens_seen": state["tokens_seen"],
         "parameters": n_params, "final_train_loss": train_loss,
         "val_loss": val["loss"], "val_bpb": val["bpb"]},
        final_checkpoint=str(last.relative_to(work)),
        model_config=config.to_dict(),
        device=str(device),
    )
