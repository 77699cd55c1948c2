"""The pretrain stage: next-token prediction on packed token shards.

AdamW or Muon (muon.py), a cosine or warmup-stable-decay schedule (schedule.py), gradient
clipping and accumulation, bf16 autocast on GPUs, optional multi-token prediction heads and
logit distillation from a teacher (objective.py), optional torch.compile. Everything that
decides a step (the batch, the learning rate) is a function of the step number and the seed,
and checkpoints hold the optimizer state and the MTP heads, so a resumed run continues with
exactly the losses the uninterrupted run would have had.

Under torchrun (DDP or FSDP2, distributed.py) every process runs this same function on its share
of each step's micro-batches; rank 0 alone logs and writes metrics, checkpoints and the
manifest. Checkpoints are full and unsharded, so a run continues on any number of processes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import TypedDict

import torch
from tqdm import tqdm

from fournil.core.device import autocast_for
from fournil.core.stage import Context, Manifest, Stage, hash_tree, read_manifest, upstream_hash
from fournil.eval.bpb import HeldOut, bits_per_byte
from fournil.model.config import TransformerConfig
from fournil.model.mtp import MTPHeads
from fournil.model.transformer import Transformer, read_config
from fournil.pretrain.config import PretrainConfig
from fournil.tokenizer.train import load_tokenizer, token_byte_lengths
from fournil.tokens.loader import get_batch
from fournil.tokens.mixture import MixtureSampler, phase_steps
from fournil.tokens.shards import TokenDataset
from fournil.train.checkpoint import (
    list_checkpoints,
    load_trainer_state,
    prune_checkpoints,
    save_checkpoint,
)
from fournil.train.distill import load_teacher
from fournil.train.distributed import (
    FullOptimizerState,
    Snapshot,
    World,
    clip_grad_norm,
    full_model_state,
    gathered,
    gradient_sync,
    init_world,
    local_grad_accum,
    micro_batch_starts,
    wrap,
)
from fournil.train.flops import flops_per_token, peak_flops
from fournil.train.metrics import MetricsLog
from fournil.train.muon import apply_lr_multiplier, make_optimizer
from fournil.train.objective import PretrainObjective
from fournil.train.schedule import lr_multiplier


class PretrainCounts(TypedDict):
    steps: int
    tokens_seen: int
    parameters: int
    final_train_loss: float | None  # None: not pretrained (an open base taken as it is)
    val_loss: float | None
    val_bpb: float | None


class TrainingSummary(TypedDict):
    """How the model was trained, in the words the model card uses."""

    optimizer: str  # adamw | muon (Muon on the hidden matrices, AdamW on the rest)
    lr: float
    weight_decay: float
    muon_lr: float | None
    schedule: str  # cosine | wsd
    decay_fraction: float | None  # wsd: the share of steps the decay takes
    mtp_depth: int  # multi-token-prediction depths (training only)
    mtp_weight: float
    teacher: str | None  # the distillation teacher's folder
    distill_temperature: float | None
    distill_alpha: float | None


class MixtureSeen(TypedDict):
    phases: dict[str, list[int]]  # phase -> [first step, end step]
    tokens_seen: dict[str, dict[str, int]]  # phase (or "natural") -> source -> tokens


class PretrainManifest(Manifest):
    counts: PretrainCounts
    final_checkpoint: str  # relative to the stage folder
    model_config: dict
    training: TrainingSummary
    device: str
    world_size: int
    mixture: MixtureSeen


def training_summary(cfg: PretrainConfig) -> TrainingSummary:
    opt, teacher = cfg.optimizer, cfg.distill.teacher
    muon, wsd = opt.name == "muon", cfg.schedule == "wsd"
    return {"optimizer": opt.name, "lr": opt.lr, "weight_decay": opt.weight_decay,
            "muon_lr": opt.muon_lr if muon else None, "schedule": cfg.schedule,
            "decay_fraction": cfg.decay_fraction if wsd else None,
            "mtp_depth": cfg.mtp.depth, "mtp_weight": cfg.mtp.weight, "teacher": teacher,
            "distill_temperature": cfg.distill.temperature if teacher else None,
            "distill_alpha": cfg.distill.alpha if teacher else None}


def run(ctx: Context) -> PretrainManifest | None:
    """`fournil pretrain` and bake (also under torchrun): the model trained on the run's token
    shards, resuming from the stage's latest checkpoint. None when --stop-after stopped it."""
    recipe = ctx.recipe
    return run_pretrain(ctx.folder("tokens", "tokens"), ctx.folder("tokenizer", "tokenizer"),
                        ctx.out("pretrain"), recipe.model, recipe.pretrain, recipe.seed,
                        stop_after=ctx.option("stop_after"), teacher_dir=recipe.teacher_dir(),
                        init_from=ctx.folder("base") if recipe.runs("base") else None)


def run_pretrain(tokens_dir: Path, tokenizer_dir: Path, out_dir: Path, model_cfg: TransformerConfig,
                 cfg: PretrainConfig, seed: int, stop_after: int | None = None,
                 teacher_dir: Path | None = None, init_from: Path | None = None
                 ) -> PretrainManifest | None:
    """Train, resuming from the stage's latest checkpoint. Returns the manifest when done,
    None when stopped early by `stop_after` (the run can be continued later).
    `teacher_dir` is `cfg.distill.teacher` resolved (recipe paths are relative to the recipe).
    `init_from` (the base stage's folder) starts from an open model's weights and shape instead
    of `model_cfg` and a random initialisation; with `cfg.max_steps == 0` it is taken as it is.
    Under torchrun every process calls it (see distributed.py); rank 0 alone writes."""
    if (teacher_dir is None) != (cfg.distill.teacher is None):
        raise ValueError("pretrain.distill.teacher and teacher_dir go together")
    inputs = {"tokens": upstream_hash(tokens_dir), "tokenizer": upstream_hash(tokenizer_dir)}
    if teacher_dir is not None:
        inputs["teacher"] = hash_tree(Path(teacher_dir))
    if init_from is not None:
        inputs["base"] = upstream_hash(init_from)
        model_cfg = read_config(init_from)
    stage = Stage("pretrain", out_dir, inputs=inputs,
                  params={"model": dataclasses.asdict(model_cfg),
                          "pretrain": dataclasses.asdict(cfg), "seed": seed})
    if manifest := stage.done():
        return manifest
    if cfg.max_steps == 0:
        return _as_is(stage, Path(init_from), model_cfg, cfg)
    with init_world(cfg.device) as world:
        local_grad_accum(cfg.grad_accum, world.size)  # before anything is written
        if world.is_main:
            stage.start(resume=True)
        world.barrier()
        return _train(stage, world, tokens_dir, tokenizer_dir, model_cfg, cfg, seed,
                      stop_after, teacher_dir, init_from)


def _as_is(stage: Stage, base_dir: Path, config: TransformerConfig,
           cfg: PretrainConfig) -> PretrainManifest:
    """No pretraining: the base model is the stage's final checkpoint, as it is."""
    stage.start()
    with torch.device("meta"):  # counted, not initialised
        parameters = Transformer(config).num_parameters()
    return stage.finish(
        {"steps": 0, "tokens_seen": 0, "parameters": parameters,
         "final_train_loss": None, "val_loss": None, "val_bpb": None},
        final_checkpoint=os.path.relpath(base_dir, stage.path), model_config=config.to_dict(),
        training=training_summary(cfg), device="none", world_size=1,
        mixture={"phases": {}, "tokens_seen": {}})


def _train(stage: Stage, world: World, tokens_dir: Path, tokenizer_dir: Path,
           model_cfg: TransformerConfig, cfg: PretrainConfig, seed: int, stop_after: int | None,
           teacher_dir: Path | None, init_from: Path | None) -> PretrainManifest | None:
    work = stage.partial
    ckpt_dir = work / "checkpoints"
    device = world.device
    autocast = autocast_for(device, cfg.dtype)
    say = tqdm.write if world.is_main else (lambda message: None)

    tokenizer = load_tokenizer(tokenizer_dir)
    token_bytes = token_byte_lengths(tokenizer)
    torch.manual_seed(seed)
    if init_from is not None:  # an open base: its shape and weights
        model = Transformer.load(init_from, device=device)
        config = model.config
    else:
        config = model_cfg.with_vocab(tokenizer.get_vocab_size())
        model = Transformer(config).to(device)
    mtp = MTPHeads(config, cfg.mtp.depth).to(device) if cfg.mtp.depth else None
    checkpoints = list_checkpoints(ckpt_dir)
    if checkpoints:  # every rank loads the full weights, before any sharding
        model.load_state_dict(Transformer.load(checkpoints[-1]).state_dict())
        if mtp is not None:
            mtp.load(checkpoints[-1])
    teacher = (load_teacher(teacher_dir, tokenizer_dir, device=device)
               if teacher_dir is not None else None)
    objective = PretrainObjective(model, mtp, cfg.mtp.weight, teacher, cfg.distill)
    n_params = model.num_parameters()
    # the optimizer is made on the wrapped parameters (FSDP replaces them by shards)
    bf16 = isinstance(autocast, torch.autocast)
    wrapped = wrap(objective, cfg.parallel, world, bf16=bf16)
    sharded = cfg.parallel == "fsdp" and world.size > 1
    optimizer = make_optimizer([model, mtp] if mtp is not None else model, cfg.optimizer)
    optimizer_state = FullOptimizerState(objective, optimizer)
    state = {"step": 0, "tokens_seen": 0}
    if checkpoints:
        state = load_trainer_state(checkpoints[-1], optimizer_state)
        say(f"pretrain: resuming from {checkpoints[-1].name} (step {state['step']})")
    # DDP wants to be compiled around (its hooks split the graph at gradient buckets); FSDP2
    # shards in place, so compiling the wrapped module covers both
    step_loss = torch.compile(wrapped) if cfg.compile else wrapped
    trained = list(objective.parameters())

    train = TokenDataset(Path(tokens_dir) / "train")
    samples_per_step = cfg.batch_size * cfg.grad_accum  # the global batch, any world size
    sampler = MixtureSampler(train, cfg.seq_len, seed, cfg.mixture, cfg.max_steps,
                             samples_per_step)
    held_out = HeldOut(Path(tokens_dir) / "val", cfg.eval_tokens)
    metrics = MetricsLog(work / "metrics.jsonl", state["step"]) if world.is_main else None
    tokens_per_step = samples_per_step * cfg.seq_len
    model_flops = flops_per_token(config, cfg.seq_len)["total"]
    peak = peak_flops(device, bf16)  # None on CPU: no MFU, the achieved FLOP/s only
    local_accum = local_grad_accum(cfg.grad_accum, world.size)
    extras = [f"MTP depth {cfg.mtp.depth}"] if mtp is not None else []
    extras += [f"distilling from {teacher_dir}"] if teacher is not None else []
    extras += [f"{cfg.parallel} on {world.size} processes"] if world.size > 1 else []
    extras += [f"MFU against a {peak / 1e12:,.0f} TFLOP/s bf16 peak"] if peak else []
    say(f"pretrain: {n_params / 1e6:.2f}M parameters, {len(train):,} train tokens, "
        f"{tokens_per_step:,} tokens/step, {cfg.max_steps} steps on {device}, "
        + ", ".join([f"{cfg.optimizer.name} + {cfg.schedule}", *extras]))

    def evaluate(step: int) -> dict:
        # every rank evaluates the whole held-out set (FSDP needs them all to gather weights;
        # under DDP the others would only wait), so all of them agree on the result
        with gathered(objective):
            result = bits_per_byte(model, held_out, token_bytes, cfg.seq_len, cfg.batch_size,
                                   device, autocast)
        if metrics is not None:
            metrics.write(step=step, val_loss=result["loss"], val_bpb=result["bpb"],
                          tokens_seen=state["tokens_seen"])
        say(f"step {step}: val loss {result['loss']:.4f}, val bpb {result['bpb']:.4f}")
        return result

    def checkpoint(step: int) -> None:
        """Gathers full weights and optimizer state to rank 0 (collectives: every rank calls
        this), which writes them."""
        saved_model, saved_mtp = model, mtp
        if sharded:
            saved_model, saved_mtp = _unsharded(full_model_state(objective), config,
                                                cfg.mtp.depth, world)
        snapshot = Snapshot(optimizer_state.state_dict())
        if world.is_main:
            save_checkpoint(ckpt_dir / f"step-{step:06d}", saved_model, snapshot, state,
                            tokenizer_dir, saved_mtp)
            prune_checkpoints(ckpt_dir, keep=2)

    model.train()
    val, train_loss = None, None
    bar = tqdm(total=cfg.max_steps, initial=state["step"], desc="pretrain", unit="step",
               mininterval=2.0, disable=not world.is_main)
    t_last, tokens_last = time.time(), state["tokens_seen"]
    while state["step"] < cfg.max_steps:
        step = state["step"]
        multiplier = lr_multiplier(step, cfg.max_steps, cfg.schedule, cfg.warmup_steps,
                                   cfg.min_lr_ratio, cfg.decay_fraction)
        apply_lr_multiplier(optimizer, multiplier)
        sums: dict[str, torch.Tensor] = {}
        starts = micro_batch_starts(step, cfg.batch_size, cfg.grad_accum, world.rank,
                                    world.size)
        for i, first in enumerate(starts):
            x, y = get_batch(train, sampler, first, cfg.batch_size, device)
            with gradient_sync(wrapped, enabled=i == len(starts) - 1):
                with autocast:
                    loss, parts = step_loss(x, y)
                # DDP and FSDP average gradients over ranks: the step's gradient is the mean
                # over all grad_accum micro-batches, as on one process
                (loss / local_accum).backward()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value.float() / local_accum
        grad_norm = clip_grad_norm(trained, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step = step + 1
        state["tokens_seen"] += tokens_per_step
        # one reduction for all the logged parts: the step's means over every rank
        sums = dict(zip(sums, world.mean(torch.stack(list(sums.values()))).tolist(),
                        strict=True))
        train_loss = sums["ce"]  # the data's cross-entropy, whatever else is minimised
        if not all(math.isfinite(v) for v in sums.values()):
            raise FloatingPointError(f"pretrain: loss is {sums} at step {step}; lower "
                                     "pretrain.optimizer.lr (or muon_lr) or check the data")
        bar.update(1)
        if metrics is not None and (step % cfg.log_every == 0 or step == cfg.max_steps):
            now = time.time()
            tok_s = (state["tokens_seen"] - tokens_last) / max(now - t_last, 1e-9)
            t_last, tokens_last = now, state["tokens_seen"]
            extra = {k: v for k, v in sums.items() if k != "ce"}
            extra["model_flops_per_s"] = round(tok_s * model_flops)
            postfix = {"loss": f"{train_loss:.3f}", "tok_s": f"{tok_s:,.0f}"}
            if peak is not None:
                extra["mfu"] = round(tok_s * model_flops / (peak * world.size), 4)
                postfix["mfu"] = f"{extra['mfu']:.1%}"
            bar.set_postfix(postfix, refresh=False)
            if cfg.mixture.phases:
                extra["phase"] = sampler.phase_of((step - 1) * samples_per_step)
            metrics.write(step=step, loss=train_loss, **extra, lr_multiplier=multiplier,
                          grad_norm=float(grad_norm), tokens_seen=state["tokens_seen"],
                          tokens_per_s=round(tok_s, 1))
        evaluates = step % cfg.eval_every == 0 or step == cfg.max_steps
        saves = step % cfg.checkpoint_every == 0 or step == cfg.max_steps
        if evaluates:
            val = evaluate(step)
        if saves:
            checkpoint(step)
        if evaluates or saves:
            # the next rate counts training steps only, not this evaluation or checkpoint
            t_last, tokens_last = time.time(), state["tokens_seen"]
        if stop_after is not None and step >= stop_after and step < cfg.max_steps:
            checkpoint(step)
            bar.close()
            world.barrier()  # the checkpoint is on disk before any process returns
            return None
    bar.close()
    if val is None:  # resumed at the very end: the final eval was logged before the stop
        val = evaluate(state["step"])
    manifest = None
    if world.is_main:
        last = list_checkpoints(ckpt_dir)[-1]
        manifest = stage.finish(
            {"steps": state["step"], "tokens_seen": state["tokens_seen"],
             "parameters": n_params, "final_train_loss": train_loss,
             "val_loss": val["loss"], "val_bpb": val["bpb"]},
            final_checkpoint=str(last.relative_to(work)),
            model_config=config.to_dict(),
            training=training_summary(cfg),
            device=str(device),
            world_size=world.size,
            # the tokens trained on, per phase and source (the model card's "seen" column)
            mixture={"phases": phase_steps(cfg.mixture, cfg.max_steps),
                     "tokens_seen": sampler.tokens_seen(state["step"] * samples_per_step)},
        )
    world.barrier()  # the stage is complete (renamed) before any process returns
    return manifest or read_manifest(stage.path)


def _unsharded(weights: dict[str, torch.Tensor], config: TransformerConfig, mtp_depth: int,
               world: World) -> tuple[Transformer | None, MTPHeads | None]:
    """Plain CPU modules holding the full weights gathered from FSDP shards, on rank 0 (None
    elsewhere), for `save_checkpoint`. Built on the meta device: nothing is initialised only
    to be overwritten."""
    if not world.is_main:
        return None, None
    with torch.device("meta"):
        model = Transformer(config)
        mtp = MTPHeads(config, mtp_depth) if mtp_depth else None
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items()
                           if k.startswith("model.")}, strict=not config.tie_embeddings,
                          assign=True)
    if config.tie_embeddings:  # assign=True replaced the shared parameter: tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    model.init_rope()
    if mtp is not None:
        mtp.load_state_dict({k.removeprefix("mtp."): v for k, v in weights.items()
                             if k.startswith("mtp.")}, assign=True)
    return model, mtp
