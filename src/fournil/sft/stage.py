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
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from fournil.core.device import autocast_for, pick_device
from fournil.core.stage import Stage, hash_files, hash_tree
from fournil.formats.chatml import ChatEncoder, check_chat_template
from fournil.model.transformer import Transformer
from fournil.pretrain.stage import MetricsLog
from fournil.sft.select import Judge, select_chats
from fournil.tokenizer.train import load_tokenizer
from fournil.train.chats import (
    Chat,
    Packed,
    Rejected,
    chat_files,
    encode_chat,
    held_out,
    inputs_and_targets,
    pack,
    read_chats,
)
from fournil.train.checkpoint import (
    list_checkpoints,
    load_trainer_state,
    prune_checkpoints,
    save_checkpoint,
)
from fournil.train.muon import apply_lr_multiplier, make_optimizer
from fournil.train.post_config import DPOConfig, LoRAConfig, SFTConfig
from fournil.train.schedule import lr_multiplier

# -- shared with dpo.py: the policy, its checkpoints, the step loop ---------------------------

TRAINING_FILES = ("optimizer.pt", "trainer_state.json", "mtp.safetensors")


def base_fingerprint(base_dir: Path) -> str:
    """The base model's weights, config and tokenizer (not a checkpoint's optimizer state)."""
    return hash_tree(base_dir, exclude=("manifest.json", *TRAINING_FILES))


def load_policy(base_dir: Path, lora: LoRAConfig, seq_len: int, device: torch.device
                ) -> Transformer:
    """The base model, with LoRA adapters when `lora.rank` > 0, ready to train."""
    check_chat_template(base_dir)
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


def train_steps(name: str, cfg: SFTConfig | DPOConfig, model: Transformer,
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


def provenance_counts(chats: Sequence[Chat]) -> dict:
    """Chats per task and per license: what the model card reports of the tuning data."""
    def count(values: list) -> dict:
        names, n = np.unique(np.array([str(v) for v in values]), return_counts=True)
        return {str(k): int(v) for k, v in zip(names, n, strict=True)}
    return {"by_task": count([c.task for c in chats]),
            "by_license": count([c.license for c in chats])}


# -- SFT --------------------------------------------------------------------------------------

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


def sft_loss_sums(model: Transformer, ids: np.ndarray, mask: np.ndarray,
                  device: torch.device) -> tuple[torch.Tensor, int]:
    """(sum of the cross-entropy over the assistant tokens of these rows, their number)."""
    x, y = inputs_and_targets(ids, mask)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    return model.loss(x, y, reduction="sum"), int((y != -100).sum())


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


def post_training_stage(name: str, data: Sequence[str | Path], base_dir: Path, out_dir: Path,
                        cfg: SFTConfig | DPOConfig, seed: int) -> Stage:
    """The stage of an SFT or DPO run: the contents of its data files and of its base model
    are its inputs (wherever they lie), the rest of its config its parameters."""
    params = dataclasses.asdict(cfg)
    del params["data"], params["base"]
    return Stage(name, out_dir, inputs={"data": hash_files(chat_files(data)),
                                        "base": base_fingerprint(base_dir)},
                 params={name: params, "seed": seed})


def run_sft(data: Sequence[str | Path], base_dir: Path, out_dir: Path, cfg: SFTConfig,
            seed: int, stop_after: int | None = None, judge: Judge | None = None
            ) -> dict | None:
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

    encoder = ChatEncoder(load_tokenizer(base_dir))
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
    eval_rows = pack([e for e, held in zip(selection.kept_tokens, is_eval, strict=True)
                      if held], cfg.seq_len, encoder.bos)
    rows = EpochRows(train, cfg.seq_len, encoder.bos, seed)

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
