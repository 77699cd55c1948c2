"""The sft stage: supervised fine-tuning on chats, full or LoRA, from a base checkpoint.

    read chats (data/chat.py) -> select (select.py) -> hold out the eval chats
    -> every epoch: shuffle (seed, epoch), pack whole chats into rows -> train on the
       assistant tokens only (the loss mask) -> checkpoints -> manifest

It reuses pretraining's parts: the optimizer (muon.py `make_optimizer`: AdamW by default),
the schedule (schedule.py), checkpoints (checkpoint.py), autocast (device.py), metrics.jsonl
and the Stage manifest. Step s trains on rows [s * B, (s + 1) * B) of the run's sequence of
packed epochs, a pure function of the data, the seed and s, so a stopped run resumes with the
losses the uninterrupted run had. The loss of a step is the mean over all its assistant
tokens, whatever micro-batch they fall in.

The output is a checkpoint folder like pretrain's (`checkpoints/step-NNNNNN/`, named by the
manifest's `final_checkpoint`): a self-contained Qwen3 model for `fournil generate` and the
export. With LoRA its `model.safetensors` holds the merged weights and the adapter sits
beside it (lora.py), for resuming and for whoever wants the adapter alone.

One process (no torchrun): post-training data is small next to pretraining's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from tqdm import tqdm

from fournil.core.device import autocast_for, pick_device
from fournil.core.stage import Context, Manifest
from fournil.formats.chat_template import chat_encoder
from fournil.model.transformer import Transformer
from fournil.sft.config import SFTConfig
from fournil.sft.select import Judge, SelectionReport, select_chats
from fournil.tokenizer.train import load_tokenizer
from fournil.train.chats import (
    IGNORE,
    Packed,
    encode_chat,
    held_out,
    inputs_and_targets,
    pack,
    read_chats,
    scored_subset,
)
from fournil.train.checkpoint import (
    list_checkpoints,
    load_trainer_state,
    prune_checkpoints,
)
from fournil.train.metrics import MetricsLog
from fournil.train.muon import make_optimizer
from fournil.train.objective import kept_positions_loss
from fournil.train.post import (
    ChatProvenance,
    load_policy,
    model_parameters,
    post_inputs,
    post_training_stage,
    provenance_counts,
    resume_policy,
    save_policy,
    train_steps,
    trainable_parameters,
    write_rejected,
)


class EpochRows:
    """The run's rows: epoch after epoch of the train chats, each epoch shuffled with
    (seed, epoch) and packed. Row r of the run is the same whatever step it is asked at."""

    def __init__(self, encoded: Sequence[tuple[list[int], list[int]]], seq_len: int,
                 pad_id: int, seed: int) -> None:
        self.encoded, self.seq_len, self.pad_id, self.seed = encoded, seq_len, pad_id, seed
        self.starts = [0]  # the run's first row of each packed epoch so far
        self._cache: dict[int, Packed] = {}

    def epoch(self, e: int) -> Packed:
        if e not in self._cache:
            order = np.random.default_rng([self.seed, e]).permutation(len(self.encoded))
            self._cache = {e: pack([self.encoded[i] for i in order], self.seq_len,
                                   self.pad_id)}  # rows are read in order: keep one epoch
        return self._cache[e]

    def epoch_of(self, row: int) -> int:
        while self.starts[-1] <= row:
            self.starts.append(self.starts[-1] + len(self.epoch(len(self.starts) - 1)))
        return int(np.searchsorted(self.starts, row, side="right")) - 1

    def rows(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = [], []
        for row in range(first, first + count):
            e = self.epoch_of(row)
            packed = self.epoch(e)
            ids.append(packed.ids[row - self.starts[e]])
            mask.append(packed.mask[row - self.starts[e]])
        return np.stack(ids), np.stack(mask)


def trim_dead_tail(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets cut after the batch's last kept target. Attention is causal, so no
    target reads a later position: the positions after the last one (the padding that ends
    the packed rows: a quarter of a batch of 4 OCR-correction rows) change neither the loss
    nor its gradients, and need not be computed. One column is kept when there is no target,
    so that the loss is a 0 that backward still accepts."""
    kept = np.flatnonzero((y != IGNORE).any(axis=0))
    end = int(kept[-1]) + 1 if len(kept) else 1
    return x[:, :end], y[:, :end]


def sft_loss_sums(model: Transformer, ids: np.ndarray, mask: np.ndarray,
                  device: torch.device) -> tuple[torch.Tensor, int]:
    """(sum of the cross-entropy over the assistant tokens of these rows, their number),
    computed where it can count: up to the last target (`trim_dead_tail`), the head on the
    targets' positions only (`kept_positions_loss`)."""
    x, y = trim_dead_tail(*inputs_and_targets(ids, mask))
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    return kept_positions_loss(model, x, y, reduction="sum"), int((y != IGNORE).sum())


@torch.no_grad()
def held_out_loss(model: Transformer, packed: Packed, batch_size: int, device: torch.device,
                  autocast) -> float | None:
    """Mean cross-entropy over the assistant tokens of the held-out chats."""
    if not len(packed):
        return None
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(packed), batch_size):
        with autocast:
            loss, count = sft_loss_sums(model, packed.ids[i:i + batch_size],
                                        packed.mask[i:i + batch_size], device)
        total, n = total + float(loss), n + count
    return total / max(n, 1)


class SFTCounts(TypedDict):
    read: int
    kept: int
    rejected: int
    kept_share: float
    train_chats: int
    eval_chats: int
    rows_per_epoch: int
    epochs: float
    steps: int
    tokens_seen: int
    parameters: int
    trained_parameters: int
    final_train_loss: float
    base_val_loss: float | None  # the held-out loss before fine-tuning (None: no eval chats)
    val_loss: float | None


class SFTManifest(Manifest):
    counts: SFTCounts
    final_checkpoint: str
    selection: SelectionReport
    data: ChatProvenance  # of the training chats
    lora: dict | None  # the LoRA settings, when adapters were trained
    base: str
    device: str


def run(ctx: Context) -> SFTManifest | None:
    """`fournil sft` and bake: the run's synth samples (or the recipe's / the verb's data)
    fine-tuned into the final pretrain checkpoint (or the given base)."""
    data, base = post_inputs(ctx, "sft")
    return run_sft(data, base, ctx.out("sft"), ctx.recipe.sft, ctx.recipe.seed,
                   stop_after=ctx.option("stop_after"))


def run_sft(data: Sequence[str | Path], base_dir: Path, out_dir: Path, cfg: SFTConfig,
            seed: int, stop_after: int | None = None, judge: Judge | None = None
            ) -> SFTManifest | None:
    """Fine-tune `base_dir` (a checkpoint or Qwen3 export with fournil's tokenizer) on the
    chats in `data`, resuming from the stage's latest checkpoint. Returns the manifest when
    done, None when stopped early by `stop_after` (the same call continues the run).
    `judge` scores chats for `cfg.select.judge_threshold`."""
    base_dir = Path(base_dir)
    stage = post_training_stage("sft", data, base_dir, out_dir, cfg, seed)
    if manifest := stage.done():
        return manifest
    work = stage.start(resume=True)
    ckpt_dir = work / "checkpoints"
    device = pick_device(cfg.device)
    autocast = autocast_for(device, cfg.dtype)

    encoder = chat_encoder(load_tokenizer(base_dir), base_dir)
    chats, unreadable = read_chats(data)
    selection = select_chats(chats, lambda m: encode_chat(encoder, m), cfg.select,
                             row_tokens=cfg.seq_len + 1, judge=judge,
                             already_rejected=unreadable)
    write_rejected(work / "rejected.parquet", selection.rejected)
    is_eval = held_out(selection.kept, cfg.eval_fraction, seed)
    train = [e for e, held in zip(selection.kept_tokens, is_eval, strict=True) if not held]
    train_chats = [c for c, held in zip(selection.kept, is_eval, strict=True) if not held]
    if not train:
        raise ValueError(f"sft: no chat left to train on ({selection.report()}); see "
                         f"{work / 'rejected.parquet'}")
    eval_rows = pack(scored_subset([e for e, held in zip(selection.kept_tokens, is_eval,
                                                         strict=True) if held],
                                   cfg.eval_max_chats, seed), cfg.seq_len, encoder.pad_id)
    rows = EpochRows(train, cfg.seq_len, encoder.pad_id, seed)

    torch.manual_seed(seed)  # LoRA's initialisation and dropout
    model = load_policy(base_dir, cfg.lora, cfg.seq_len, device)
    base_val = held_out_loss(model, eval_rows, cfg.batch_size, device, autocast)
    optimizer = make_optimizer(model, cfg.optimizer)
    state = {"step": 0, "tokens_seen": 0}
    checkpoints = list_checkpoints(ckpt_dir)
    if checkpoints:
        resume_policy(model, checkpoints[-1], cfg.lora)
        state = load_trainer_state(checkpoints[-1], optimizer)
        tqdm.write(f"sft: resuming from {checkpoints[-1].name} (step {state['step']})")
    metrics = MetricsLog(work / "metrics.jsonl", state["step"])
    n_trainable = sum(p.numel() for p in trainable_parameters(model))
    rows_per_step = cfg.batch_size * cfg.grad_accum
    report = selection.report()
    tqdm.write(f"sft: {report['kept']}/{report['read']} chats selected "
               f"({report['kept_share']:.0%}), {len(train)} train, {sum(is_eval)} held out; "
               f"{len(rows.epoch(0))} rows of {cfg.seq_len + 1} tokens per epoch; "
               f"{n_trainable / 1e6:.2f}M trained parameters "
               f"({'LoRA rank ' + str(cfg.lora.rank) if cfg.lora.rank else 'full'}), "
               f"{cfg.max_steps} steps on {device}")

    def step_fn(step: int) -> dict[str, float]:
        ids, mask = rows.rows(step * rows_per_step, rows_per_step)
        n_step = max(int(mask[:, 1:].sum()), 1)  # the step's assistant tokens, all micro-batches
        total = 0.0
        for i in range(0, rows_per_step, cfg.batch_size):
            with autocast:
                loss, _ = sft_loss_sums(model, ids[i:i + cfg.batch_size],
                                        mask[i:i + cfg.batch_size], device)
            (loss / n_step).backward()
            total += loss.item()
        return {"loss": total / n_step, "tokens": ids.shape[0] * cfg.seq_len,
                "assistant_tokens": n_step, "epoch": rows.epoch_of(step * rows_per_step)}

    def evaluate(step: int) -> dict:
        val_loss = held_out_loss(model, eval_rows, cfg.batch_size, device, autocast)
        if val_loss is not None:
            metrics.write(step=step, val_loss=val_loss)
            tqdm.write(f"step {step}: held-out loss {val_loss:.4f} (base {base_val:.4f})")
        return {"val_loss": val_loss}

    def checkpoint(step: int) -> None:
        save_policy(ckpt_dir / f"step-{step:06d}", model, optimizer, state, base_dir, cfg.lora)
        prune_checkpoints(ckpt_dir, keep=2)

    done = train_steps("sft", cfg, model, optimizer, state, metrics, step_fn, evaluate,
                       checkpoint, stop_after)
    if done is None:
        return None
    last, val = done
    final = list_checkpoints(ckpt_dir)[-1]
    rows_seen = state["step"] * rows_per_step
    last_epoch = rows.epoch_of(rows_seen - 1)
    epochs = last_epoch + (rows_seen - rows.starts[last_epoch]) / len(rows.epoch(last_epoch))
    manifest = stage.finish(
        {**{k: report[k] for k in ("read", "kept", "rejected", "kept_share")},
         "train_chats": len(train), "eval_chats": sum(is_eval),
         "rows_per_epoch": len(rows.epoch(0)), "epochs": round(epochs, 3),
         "steps": state["step"], "tokens_seen": state["tokens_seen"],
         "parameters": model_parameters(model),
         "trained_parameters": n_trainable,
         "final_train_loss": last["loss"], "base_val_loss": base_val,
         "val_loss": val["val_loss"]},
        final_checkpoint=str(final.relative_to(work)),
        selection=report,
        data=provenance_counts(train_chats),
        lora=dataclasses.asdict(cfg.lora) if cfg.lora.rank else None,
        base=str(base_dir),
        device=str(device),
    )
    return manifest
