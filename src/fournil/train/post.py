"""What the post-training stages (sft, dpo) share: where their data and starting model come
from, their stage fingerprint, the policy (the base model, with LoRA adapters when asked) and
its checkpoints, and the step loop. Each stage adds its own data handling and loss."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from fournil.core.stage import Context, Stage, hash_files, hash_tree
from fournil.core.validation import RecipeError
from fournil.model.transformer import Transformer
from fournil.train.chats import Chat, Rejected, chat_files
from fournil.train.checkpoint import final_checkpoint, save_checkpoint
from fournil.train.config import LoRAConfig, PostTrainConfig
from fournil.train.metrics import MetricsLog
from fournil.train.muon import apply_lr_multiplier
from fournil.train.schedule import lr_multiplier

TRAINING_FILES = ("optimizer.pt", "trainer_state.json", "mtp.safetensors")


def base_fingerprint(base_dir: Path) -> str:
    """The base model's weights, config and tokenizer (not a checkpoint's optimizer state)."""
    return hash_tree(base_dir, exclude=("manifest.json", *TRAINING_FILES))


def load_policy(base_dir: Path, lora: LoRAConfig, seq_len: int, device: torch.device
                ) -> Transformer:
    """The base model, with LoRA adapters when `lora.rank` > 0, ready to train."""
    model = Transformer.load(base_dir, device=device)
    if seq_len > model.config.max_seq_len:
        raise ValueError(f"seq_len {seq_len} exceeds the base model's max_seq_len "
                         f"({model.config.max_seq_len}, {base_dir})")
    if lora.rank:
        from fournil.train.lora import add_lora
        model = add_lora(model, lora)
    return model


def resume_policy(model: Transformer, checkpoint: Path, lora: LoRAConfig) -> None:
    """Loads a checkpoint's trained weights into the policy: the adapter with LoRA (the
    checkpoint's model.safetensors is merged, not what the adapted model holds), else all."""
    if lora.rank:
        from fournil.train.lora import load_adapter
        load_adapter(model, checkpoint)
    else:
        model.load_state_dict(Transformer.load(checkpoint, device=model.device).state_dict())


def save_policy(directory: Path, model: Transformer, optimizer: torch.optim.Optimizer,
                state: dict, base_dir: Path, lora: LoRAConfig) -> None:
    if not lora.rank:
        save_checkpoint(directory, model, optimizer, state, base_dir)
        return
    from fournil.train.lora import merged, save_adapter
    save_checkpoint(directory, merged(model), optimizer, state, base_dir,
                    extra=lambda tmp: save_adapter(model, tmp, lora, base_dir))


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad]


def model_parameters(model: torch.nn.Module) -> int:
    """The parameters of the model as saved (merged: LoRA factors left out), tied ones once."""
    unique = {id(p): (n, p) for n, p in model.named_parameters(remove_duplicate=False)}
    return sum(p.numel() for n, p in unique.values() if ".lora_" not in n)


def train_steps(name: str, cfg: PostTrainConfig, model: Transformer,
                optimizer: torch.optim.Optimizer, state: dict, metrics: MetricsLog,
                step_fn: Callable[[int], dict[str, float]], evaluate: Callable[[int], dict],
                checkpoint: Callable[[int], None], stop_after: int | None
                ) -> tuple[dict, dict] | None:
    """The loop SFT and DPO share: per step, the schedule's learning rate, `step_fn(step)`
    (forward and backward over the step's micro-batches; returns the logged values, `loss`
    first, and `tokens`), clipping, the update, metrics, evaluation and checkpoints.
    Returns (last logged values, last evaluation), or None when stopped by `stop_after`."""
    trained = trainable_parameters(model)
    bar = tqdm(total=cfg.max_steps, initial=state["step"], desc=name, unit="step",
               mininterval=2.0)
    t_last, tokens_last = time.time(), state["tokens_seen"]
    logged: dict[str, float] = {}
    val = None
    model.train()
    while state["step"] < cfg.max_steps:
        step = state["step"]
        multiplier = lr_multiplier(step, cfg.max_steps, cfg.schedule, cfg.warmup_steps,
                                   cfg.min_lr_ratio, cfg.decay_fraction)
        apply_lr_multiplier(optimizer, multiplier)
        logged = step_fn(step)
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step = step + 1
        state["tokens_seen"] += int(logged.pop("tokens"))
        if not all(math.isfinite(v) for v in logged.values()):
            raise FloatingPointError(f"{name}: {logged} at step {step}; lower "
                                     f"{name}.optimizer.lr or check the data")
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            now = time.time()
            tok_s = (state["tokens_seen"] - tokens_last) / max(now - t_last, 1e-9)
            t_last, tokens_last = now, state["tokens_seen"]
            bar.set_postfix(loss=f"{logged['loss']:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            metrics.write(step=step, **logged, lr_multiplier=multiplier,
                          grad_norm=float(grad_norm), tokens_seen=state["tokens_seen"],
                          tokens_per_s=round(tok_s, 1))
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            val = evaluate(step)
            model.train()
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            checkpoint(step)
        if stop_after is not None and stop_after <= step < cfg.max_steps:
            checkpoint(step)
            bar.close()
            return None
    bar.close()
    if val is None:  # resumed at the very end: the final evaluation was before the stop
        val = evaluate(state["step"])
    return logged, val


def write_rejected(path: Path, rejected: Sequence[Rejected]) -> None:
    """What selection (or reading) turned away, with the reason: id, where, reason, detail."""
    columns = {name: [getattr(r, name) for r in rejected]
               for name in ("id", "where", "reason", "detail")}
    pq.write_table(pa.table(columns, schema=pa.schema([(n, pa.string()) for n in columns])),
                   path, compression="zstd")


class ChatProvenance(TypedDict):
    by_task: dict[str, int]  # training chats per synth task (or "?")
    by_license: dict[str, int]  # training chats per license
    by_source: dict[str, int]  # training chats per source of their seed document (or "None")


def provenance_counts(chats: Sequence[Chat]) -> ChatProvenance:
    """Chats per task, per license and per seed document's source: what the model card
    reports of the tuning data."""
    def count(values: list) -> dict:
        names, n = np.unique(np.array([str(v) for v in values]), return_counts=True)
        return {str(k): int(v) for k, v in zip(names, n, strict=True)}
    return {"by_task": count([c.task for c in chats]),
            "by_license": count([c.license for c in chats]),
            "by_source": count([c.source for c in chats])}


def post_training_stage(name: str, data: Sequence[str | Path], base_dir: Path, out_dir: Path,
                        cfg: PostTrainConfig, seed: int) -> Stage:
    """The stage of an SFT or DPO run: the contents of its data files and of its base model
    are its inputs (wherever they lie), the rest of its config its parameters."""
    params = dataclasses.asdict(cfg)
    del params["data"], params["base"]
    return Stage(name, out_dir, inputs={"data": hash_files(chat_files(data)),
                                        "base": base_fingerprint(base_dir)},
                 params={name: params, "seed": seed})


def post_inputs(ctx: Context, stage: str) -> tuple[list[Path], Path]:
    """The data and the starting model of a post-training stage (`sft` or `dpo`): the verb's
    --data / --base, else the recipe's `<stage>.data` / `<stage>.base`, else the run's synth
    samples (sft) and the final checkpoint of the stage before (sft: pretrain; dpo: sft,
    else pretrain)."""
    recipe, cfg = ctx.recipe, getattr(ctx.recipe, stage)
    data = [Path(p) for p in ctx.option("data", [])] or [recipe.resolve(p) for p in cfg.data]
    if not data and stage == "sft" and ctx.folder("synth").exists():
        data = [ctx.folder("synth")]
    if not data:
        raise RecipeError(f"{stage}: no data; pass --data or set {stage}.data in the recipe")
    base = ctx.option("base")
    if base or cfg.base:
        return data, Path(base) if base else recipe.resolve(cfg.base)
    for before in ("sft", "pretrain") if stage == "dpo" else ("pretrain",):
        if (ctx.folder(before) / "manifest.json").exists():
            return data, final_checkpoint(ctx.folder(before))
    raise RecipeError(f"{stage}: no base model; run pretrain first, or pass --base")


def final_model(ctx: Context) -> Path:
    """The checkpoint the run ends with: that of the last post-training stage the recipe runs
    (dpo, then sft), else pretrain's."""
    last = next((s for s in ("dpo", "sft") if ctx.recipe.runs(s)), "pretrain")
    return final_checkpoint(ctx.folder(last))


def trained_models(ctx: Context) -> dict[str, Path]:
    """{stage: final checkpoint} of the run's training stages, in order: pretrain, then the
    post-training ones the recipe runs."""
    return {name: final_checkpoint(ctx.folder(name))
            for name in ("pretrain", "sft", "dpo") if ctx.recipe.runs(name)}
