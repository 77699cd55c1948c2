"""The dpo stage: direct preference optimisation (Rafailov et al., 2023) from a base model.

For a prompt x with a preferred answer y_w and a dispreferred one y_l, with the policy pi
(trained, full or LoRA) and the frozen reference pi_ref (the base model):

    r(y)  = beta * (log pi(y | x) - log pi_ref(y | x))       (the implicit reward)
    loss  = -log sigmoid(r(y_w) - r(y_l))

log pi(y | x) is summed over the answer's tokens and its `<|im_end|>` only (the mask of
data/chat.py `encode_response`). The reference never changes, so its log-probabilities are
computed once, before training, with no gradient; the reference model is then dropped.
Logged per step and on the held-out pairs: the loss, the mean rewards of chosen and rejected
answers, their margin and the accuracy (share of pairs with a positive margin).

Pairs are JSONL or Parquet rows with `prompt` (a string: one user message; or a list of
messages), `chosen` and `rejected` (strings, or message lists whose last message is the
assistant's), and optionally `id` and `split`. Malformed rows and pairs that cannot be used
(identical answers, too long for `seq_len`) are rejected with a reason and counted.

The loop, checkpoints (merged weights + adapter with LoRA), resume and output are SFT's
(sft.py): a checkpoint folder that `fournil export` and `fournil generate` take as is.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fournil.core.device import autocast_for, pick_device
from fournil.core.stage import Context, Manifest
from fournil.dpo.config import DPOConfig
from fournil.formats.chat_template import chat_encoder
from fournil.model.transformer import Transformer
from fournil.tokenizer.train import load_tokenizer
from fournil.train.chats import (
    IGNORE,
    Rejected,
    encode_response,
    held_out,
    parse_messages,
    readable_rows,
    scored_subset,
)
from fournil.train.checkpoint import (
    list_checkpoints,
    load_trainer_state,
    prune_checkpoints,
)
from fournil.train.metrics import MetricsLog
from fournil.train.muon import make_optimizer
from fournil.train.post import (
    load_policy,
    model_parameters,
    post_inputs,
    post_training_stage,
    resume_policy,
    save_policy,
    train_steps,
    trainable_parameters,
    write_rejected,
)


@dataclass
class Pair:
    id: str
    prompt: list[dict]  # the messages before the answer
    chosen: str
    rejected: str
    split: str | None = None
    where: str = ""


def _answer(value: object) -> str | None:
    """An answer given as a string, or as messages whose last one is the assistant's."""
    if isinstance(value, str):
        return value
    messages, _ = parse_messages(value)
    if messages and messages[-1]["role"] == "assistant":
        return messages[-1]["content"]
    return None


def read_pairs(paths: Sequence[str | Path]) -> tuple[list[Pair], list[Rejected]]:
    """Every row of the pair files behind `paths`: the pairs, and the rows that are not."""
    pairs, rejected = [], []
    for where, row in readable_rows(paths, rejected):
        pair_id = str(row.get("id") or where)
        prompt = row.get("prompt")
        if isinstance(prompt, str):
            prompt, error = [{"role": "user", "content": prompt}], ""
        else:
            prompt, error = parse_messages(prompt)
        if prompt is None:
            rejected.append(Rejected(pair_id, where, "read:bad_prompt", error))
            continue
        chosen, other = _answer(row.get("chosen")), _answer(row.get("rejected"))
        if chosen is None or other is None:
            rejected.append(Rejected(pair_id, where, "read:bad_answer",
                                     "chosen and rejected must be strings or messages "
                                     "ending with the assistant's"))
            continue
        pairs.append(Pair(pair_id, prompt, chosen, other, row.get("split"), where))
    return pairs, rejected


def usable(pair: Pair, encoded: tuple[tuple[list, list], tuple[list, list]],
           seq_len: int) -> str:
    """'' for a pair DPO can learn from, else the reason."""
    if not pair.chosen.strip() or not pair.rejected.strip():
        return "format:empty_answer"
    if pair.chosen.strip() == pair.rejected.strip():
        return "pair:identical_answers"
    if max(len(ids) for ids, _ in encoded) > seq_len + 1:
        return "length:too_long"
    return ""


def padded(sequences: Sequence[tuple[list[int], list[int]]], pad_id: int,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (IGNORE outside the answers) of sequences right-padded to the
    longest: causal attention keeps the padding out of every real position."""
    width = max(len(ids) for ids, _ in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int8)
    for r, (i, m) in enumerate(sequences):
        ids[r, :len(i)], mask[r, :len(m)] = i, m
    targets = np.where(mask[:, 1:] == 1, ids[:, 1:], IGNORE)
    return (torch.from_numpy(ids[:, :-1]).to(device), torch.from_numpy(targets).to(device))


def answer_logps(model: Transformer, sequences: Sequence[tuple[list[int], list[int]]],
                 pad_id: int, device: torch.device) -> torch.Tensor:
    """log p(answer | prompt) of each sequence, summed over the answer's tokens."""
    x, y = padded(sequences, pad_id, device)
    return -model.loss(x, y, reduction="none").sum(dim=1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair sigmoid DPO losses, and the rewards of both answers."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen - rejected), {"chosen": chosen.detach(),
                                              "rejected": rejected.detach()}


def summary(losses: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> dict:
    margin = chosen - rejected
    return {"loss": float(losses.mean()), "reward_chosen": float(chosen.mean()),
            "reward_rejected": float(rejected.mean()), "margin": float(margin.mean()),
            "accuracy": float((margin > 0).float().mean())}


class DPOCounts(TypedDict):
    """Also `final_<metric>` of the last logged step and the held-out metrics (loss, reward
    accuracy and margin), by name."""

    read: int
    kept: int
    rejected: int
    train_pairs: int
    eval_pairs: int
    steps: int
    tokens_seen: int
    parameters: int
    trained_parameters: int


class DPOManifest(Manifest):
    counts: DPOCounts
    final_checkpoint: str
    rejected_by_reason: dict[str, int]
    lora: dict | None
    base: str
    device: str


def run(ctx: Context) -> DPOManifest | None:
    """`fournil dpo` and bake: the recipe's (or the verb's) preference pairs, tuned into the
    run's final SFT checkpoint (else pretrain's, or the given base)."""
    data, base = post_inputs(ctx, "dpo")
    return run_dpo(data, base, ctx.out("dpo"), ctx.recipe.dpo, ctx.recipe.seed,
                   stop_after=ctx.option("stop_after"))


def run_dpo(data: Sequence[str | Path], base_dir: Path, out_dir: Path, cfg: DPOConfig,
            seed: int, stop_after: int | None = None) -> DPOManifest | None:
    """Preference-tune `base_dir` on the pairs in `data`, the frozen reference being
    `base_dir` itself; resumes from the stage's latest checkpoint. Returns the manifest when
    done, None when stopped early by `stop_after`."""
    base_dir = Path(base_dir)
    stage = post_training_stage("dpo", data, base_dir, out_dir, cfg, seed)
    if manifest := stage.done():
        return manifest
    work = stage.start(resume=True)
    ckpt_dir = work / "checkpoints"
    device = pick_device(cfg.device)
    autocast = autocast_for(device, cfg.dtype)

    encoder = chat_encoder(load_tokenizer(base_dir), base_dir)
    pad = encoder.pad_id
    pairs, rejected = read_pairs(data)
    read = len(pairs) + len(rejected)
    kept, encoded = [], []
    for pair in pairs:
        both = (encode_response(encoder, pair.prompt, pair.chosen),
                encode_response(encoder, pair.prompt, pair.rejected))
        if reason := usable(pair, both, cfg.seq_len):
            rejected.append(Rejected(pair.id, pair.where, reason))
        else:
            kept.append(pair)
            encoded.append(both)
    write_rejected(work / "rejected.parquet", rejected)
    is_eval = held_out(kept, cfg.eval_fraction, seed)  # Pair has the `split` held_out reads
    train = [e for e, held in zip(encoded, is_eval, strict=True) if not held]
    evals = scored_subset([e for e, held in zip(encoded, is_eval, strict=True) if held],
                          cfg.eval_max_chats, seed)
    if not train:
        raise ValueError(f"dpo: no pair left to train on ({read} read, rejected: "
                         f"{dict(Counter(r.reason for r in rejected))})")

    torch.manual_seed(seed)
    model = load_policy(base_dir, cfg.lora, cfg.seq_len, device)

    @torch.no_grad()
    def logps(pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) answer log-probs of `pairs` under the model, in eval mode."""
        model.eval()
        out = []
        for i in range(0, len(pairs), cfg.batch_size):
            batch = pairs[i:i + cfg.batch_size]
            with autocast:
                out.append(answer_logps(model, [c for c, _ in batch] + [r for _, r in batch],
                                        pad, device).float().view(2, -1))
        both = torch.cat(out, dim=1) if out else torch.zeros(2, 0, device=device)
        return both[0], both[1]

    # the reference: the base model (with LoRA, the adapted model before training: B = 0)
    ref_train, ref_eval = logps(train), logps(evals)
    optimizer = make_optimizer(model, cfg.optimizer)
    state = {"step": 0, "tokens_seen": 0}
    checkpoints = list_checkpoints(ckpt_dir)
    if checkpoints:
        resume_policy(model, checkpoints[-1], cfg.lora)
        state = load_trainer_state(checkpoints[-1], optimizer)
        tqdm.write(f"dpo: resuming from {checkpoints[-1].name} (step {state['step']})")
    metrics = MetricsLog(work / "metrics.jsonl", state["step"])
    pairs_per_step = cfg.batch_size * cfg.grad_accum
    tqdm.write(f"dpo: {len(kept)}/{read} pairs usable, {len(train)} train, {len(evals)} held "
               f"out; beta {cfg.beta}, {pairs_per_step} pairs/step, {cfg.max_steps} steps on "
               f"{device}")

    @functools.lru_cache(maxsize=2)
    def epoch_order(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(len(train))

    def step_pairs(step: int) -> list[int]:
        """Indices of the train pairs of a step: epochs of seeded shuffles, end to end."""
        return [int(epoch_order(k // len(train))[k % len(train)])
                for k in range(step * pairs_per_step, (step + 1) * pairs_per_step)]

    def step_fn(step: int) -> dict[str, float]:
        index = step_pairs(step)
        parts: dict[str, list[torch.Tensor]] = {"loss": [], "chosen": [], "rejected": []}
        tokens = 0
        for i in range(0, len(index), cfg.batch_size):
            batch = index[i:i + cfg.batch_size]
            sequences = [train[j][0] for j in batch] + [train[j][1] for j in batch]
            tokens += sum(len(ids) for ids, _ in sequences)
            with autocast:
                policy = answer_logps(model, sequences, pad, device).float().view(2, -1)
            losses, rewards = dpo_loss(policy[0], policy[1], ref_train[0][batch],
                                       ref_train[1][batch], cfg.beta)
            (losses.sum() / len(index)).backward()
            parts["loss"].append(losses.detach())
            parts["chosen"].append(rewards["chosen"])
            parts["rejected"].append(rewards["rejected"])
        return {**summary(*(torch.cat(parts[k]) for k in ("loss", "chosen", "rejected"))),
                "tokens": tokens}

    def evaluate(step: int) -> dict:
        if not evals:
            return {}
        chosen, rejected_ = logps(evals)
        losses, rewards = dpo_loss(chosen, rejected_, ref_eval[0], ref_eval[1], cfg.beta)
        result = {f"val_{k}": v for k, v in summary(losses, rewards["chosen"],
                                                    rewards["rejected"]).items()}
        metrics.write(step=step, **result)
        tqdm.write(f"step {step}: held-out loss {result['val_loss']:.4f}, margin "
                   f"{result['val_margin']:.4f}, accuracy {result['val_accuracy']:.2f}")
        return result

    def checkpoint(step: int) -> None:
        save_policy(ckpt_dir / f"step-{step:06d}", model, optimizer, state, base_dir, cfg.lora)
        prune_checkpoints(ckpt_dir, keep=2)

    done = train_steps("dpo", cfg, model, optimizer, state, metrics, step_fn, evaluate,
                       checkpoint, stop_after)
    if done is None:
        return None
    last, val = done
    final = list_checkpoints(ckpt_dir)[-1]
    return stage.finish(
        {"read": read, "kept": len(kept), "rejected": len(rejected),
         "train_pairs": len(train), "eval_pairs": len(evals), "steps": state["step"],
         "tokens_seen": state["tokens_seen"], "parameters": model_parameters(model),
         "trained_parameters": sum(p.numel() for p in trainable_parameters(model)),
         **{f"final_{k}": v for k, v in last.items()}, **val},
        final_checkpoint=str(final.relative_to(work)),
        rejected_by_reason=dict(sorted(Counter(r.reason for r in rejected).items())),
        lora=dataclasses.asdict(cfg.lora) if cfg.lora.rank else None,
        base=str(base_dir),
        device=str(device),
    )
