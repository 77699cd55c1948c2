"""Pretraining speed: fournil's trainer against LitGPT and the HF Trainer, and the CPU's ceiling.

    python bench/pretrain_bench.py                  # 60 steps a side, ~4 min on 2 cores
    python bench/pretrain_bench.py --steps 30 --warmup 5 --work /tmp/pb    # quicker, kept
    python bench/pretrain_bench.py --sides fournil,litgpt --repeats 2      # best of two

One run, on one corpus and one model:

1. the ceiling: fp32 `torch.mm` GFLOP/s at the model's own matmul shapes ([B*T, d] x [d, ff],
   the LM head [B*T, d] x [d, V], ...) and square 1024 / 2048, every thread torch uses, best
   of a few repeats, before and after the sides; the ceiling is the best of them all. Also
   the time one step's linear-layer matmuls take alone (forward and both gradients, each at
   its own shape), and the time its attention kernel takes alone (causal SDPA forward and
   backward, which every side calls): together, a step time no trainer of this model beats;
2. the corpus: `recipes/tiny-cpu.toml` through fournil's real data stages (`run_stages` up
   to `tokens`: ingest, curate, tokenizer, tokens; stages already up to date under `--data`
   are reused), so every side reads the same uint16 train shards, in the same window order
   (fournil's `WindowSampler` with the recipe's seed);
3. the same model trained for `--steps` steps with AdamW on each side, each in a fresh
   process with the same thread count and seed: tiny-cpu's Qwen3 shape (d 192, 6 layers,
   3 query heads / 1 kv head of 64, SwiGLU 512, QK-norm, tied embeddings), seq_len 256,
   batch 8, fp32:
   - fournil: the real pretrain stage, `run_pretrain`, with eval and checkpoints pushed past
     the end and a metrics row every step; once as the recipe has it (eager) and once with
     `pretrain.compile = true` (torch.compile of the training step);
   - LitGPT: its real pretrain entry point, `litgpt.pretrain.setup`, with a `litgpt.Config`
     of the same shape and a LitGPT `DataModule` serving our windows (LitGPT compiles the
     model with `torch.compile`, as its pretrain always does), in its own environment
     (`bench/peers.py`: `.bench-envs/litgpt`, made on first use, the same torch): LitGPT's
     pins would break the project's transformers;
   - HF: `transformers.Trainer` on `Qwen3ForCausalLM(Qwen3Config(...))`, no eval, no saving,
     with the project's own transformers (`pip install -e '.[dev]'`).

Step time is the wall time from one step to the next (data, forward, backward, clipping,
optimizer, a log line: every side logs every step); the first `--warmup` steps (allocator
warmup, LitGPT's compilation) are left out. The timed steps are cut into runs of `--window`
consecutive steps, and a side's speed is its fastest run, as timeit keeps the best of its
repeats: other work on a shared machine only ever slows a side down, so the fastest run is
the closest to what the side does alone; the median step is printed beside it, and
`--repeats` runs every side again (passes in alternating order) and keeps its best.
GFLOP/s counts model FLOPs, `fournil.train.flops.flops_per_token` (what the trainer logs as
`model_flops_per_s`, PaLM / nanoGPT style): per token 6N + 6dV + 12 L d_attn T, the LM
head's 6dV counted although it is tied to the embedding (a third of the total here).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from peers import (
    ENVS,
    cpu_name,
    in_fresh_process,
    isolate_side,
    peer_python,
    trainer_step_clock,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny-cpu.toml"


# ---------------------------------------------------------------------------------- setup


@dataclasses.dataclass
class Setup:
    """What every side trains: the model's shape, the batches, the optimizer, the run."""

    tokens_dir: str
    tokenizer_dir: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float
    rms_norm_eps: float
    seq_len: int
    batch_size: int
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    grad_clip: float
    warmup_lr_steps: int
    min_lr_ratio: float
    seed: int
    steps: int
    threads: int

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


def make_setup(data_dir: Path | None, steps: int, threads: int = 0) -> Setup:
    """tiny-cpu's model and pretrain settings, on its corpus prepared by the real stages."""
    from fournil.bake import run_stages
    from fournil.recipe import load_recipe
    from fournil.stages import RunLayout
    from fournil.tokenizer.train import load_tokenizer

    recipe = load_recipe(RECIPE)
    layout = RunLayout(recipe.run_dir(data_dir or ROOT / "runs" / recipe.name))
    run_stages(recipe, layout, until="tokens")  # each skipped when its manifest is up to date
    m, p = recipe.model, recipe.pretrain
    if p.grad_accum != 1:
        raise ValueError(f"{RECIPE}: the bench assumes pretrain.grad_accum = 1")
    return Setup(
        tokens_dir=str(layout.tokens), tokenizer_dir=str(layout.tokenizer),
        vocab_size=load_tokenizer(layout.tokenizer).get_vocab_size(),
        hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads,
        num_kv_heads=m.num_kv_heads, head_dim=m.head_dim,
        intermediate_size=m.intermediate_size, rope_theta=m.rope_theta,
        rms_norm_eps=m.rms_norm_eps, seq_len=p.seq_len, batch_size=p.batch_size,
        lr=p.optimizer.lr, beta1=p.optimizer.beta1, beta2=p.optimizer.beta2,
        weight_decay=p.optimizer.weight_decay, grad_clip=p.grad_clip,
        warmup_lr_steps=min(p.warmup_steps, steps // 2), min_lr_ratio=p.min_lr_ratio,
        seed=recipe.seed, steps=steps, threads=threads or len(os.sched_getaffinity(0)),
    )


def flops_per_token(s: Setup) -> dict[str, float]:
    """Training FLOPs per token by part (fournil.train.flops), for this setup's model."""
    from fournil.model.config import TransformerConfig
    from fournil.train.flops import flops_per_token as model_flops

    config = TransformerConfig(
        vocab_size=s.vocab_size, hidden_size=s.hidden_size, num_layers=s.num_layers,
        num_heads=s.num_heads, num_kv_heads=s.num_kv_heads, head_dim=s.head_dim,
        intermediate_size=s.intermediate_size, max_seq_len=s.seq_len)
    return model_flops(config, s.seq_len)


# ------------------------------------------------------------------------------ ceiling


def mm_seconds(m: int, k: int, n: int, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Seconds per fp32 [m, k] x [k, n] torch.mm: the best of `repeats` timings of a loop
    lasting about `min_seconds`."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm the allocator and the BLAS kernels
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    calls = max(1, round(min_seconds / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def matmul_ceiling(s: Setup) -> list[tuple[str, float]]:
    """(shape, GFLOP/s) at the model's main matmul shapes and two squares."""
    bt, d, ff, v = s.batch_size * s.seq_len, s.hidden_size, s.intermediate_size, s.vocab_size
    shapes = [(bt, d, ff), (bt, ff, d), (bt, d, s.num_heads * s.head_dim), (bt, d, v),
              (1024, 1024, 1024), (2048, 2048, 2048)]
    return [(f"[{m}, {k}] x [{k}, {n}]", 2.0 * m * k * n / mm_seconds(m, k, n) / 1e9)
            for m, k, n in shapes]


def linear_matmul_seconds(s: Setup) -> float:
    """Seconds one training step spends in its linear layers' matmuls, each timed alone at
    its own shape: forward [M, in] x [in, out], input gradient [M, out] x [out, in], weight
    gradient [out, M] x [M, in], M = batch * seq_len. No implementation with these shapes
    steps faster (attention, norms, loss and optimizer come on top)."""
    m, d, ff = s.batch_size * s.seq_len, s.hidden_size, s.intermediate_size
    d_attn, d_kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    per_layer = [(d, d_attn), (d, d_kv), (d, d_kv), (d_attn, d), (d, ff), (d, ff), (ff, d)]
    linears = {}
    for shape in per_layer:
        linears[shape] = linears.get(shape, 0) + s.num_layers
    linears[(d, s.vocab_size)] = linears.get((d, s.vocab_size), 0) + 1  # the LM head
    cache: dict[tuple[int, int, int], float] = {}

    def seconds(a: int, b: int, c: int) -> float:
        if (a, b, c) not in cache:
            cache[(a, b, c)] = mm_seconds(a, b, c, repeats=3, min_seconds=0.1)
        return cache[(a, b, c)]

    return sum(count * (seconds(m, k, n) + seconds(m, n, k) + seconds(n, m, k))
               for (k, n), count in linears.items())


def attention_seconds(s: Setup, repeats: int = 3, calls: int = 5) -> float:
    """Seconds one training step spends in its attention kernel alone: causal
    `scaled_dot_product_attention` forward and backward at the model's shape (grouped-query,
    as every side calls it), times the layers. Every side runs this same kernel, so with the
    linear matmuls it is a floor that all sides share."""
    import torch.nn.functional as F

    b, h, kv, t, hd = s.batch_size, s.num_heads, s.num_kv_heads, s.seq_len, s.head_dim
    q = torch.randn(b, h, t, hd, requires_grad=True)
    k, v = (torch.randn(b, kv, t, hd, requires_grad=True) for _ in range(2))
    grad = torch.randn(b, h, t, hd)

    def once() -> None:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != h)
        out.backward(grad)

    once()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            once()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * s.num_layers


# ------------------------------------------------------------------------------ the data


class Windows(torch.utils.data.Dataset):
    """The training windows fournil's trainer reads, in its order: sample i is tokens
    [start(i), start(i) + seq_len + 1) of the train split, as int64. With `stamp`, the time
    each batch's first sample is asked for is kept in `fetched` (a step clock for a loop we
    cannot instrument). Module level, so that it pickles (LitGPT saves its DataLoader)."""

    def __init__(self, s: Setup, stamp: bool = False) -> None:
        from fournil.tokens.loader import WindowSampler
        from fournil.tokens.shards import TokenDataset

        self.data = TokenDataset(Path(s.tokens_dir) / "train")
        self.sampler = WindowSampler(len(self.data), s.seq_len, s.seed)
        self.seq_len, self.batch_size = s.seq_len, s.batch_size
        self.length = (s.steps + 1) * s.batch_size  # one batch spare: LitGPT reads one past
        self.stamp, self.fetched = stamp, []

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.stamp and i % self.batch_size == 0:
            self.fetched.append(time.perf_counter())
        return torch.from_numpy(self.data.read(self.sampler.start(i), self.seq_len + 1))


class Examples(torch.utils.data.Dataset):
    """The same windows as HF's causal-LM examples: HF shifts the labels itself, so every
    side computes logits and losses at the same 256 positions (HF's last target unused)."""

    def __init__(self, s: Setup) -> None:
        self.windows = Windows(s)
        self.length = s.steps * s.batch_size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.windows[i][:-1]
        return {"input_ids": x, "labels": x}


# -------------------------------------------------------------------------------- sides


def intervals(stamps: list[float]) -> list[float]:
    """Step times from the clock readings between steps."""
    return [b - a for a, b in itertools.pairwise(stamps)]




def run_fournil(s: Setup, work: Path, compile: bool = False) -> dict:
    """The real pretrain stage; a metrics row every step gives each step's wall time.
    `compile`: the recipe's `pretrain.compile` (torch.compile of the training step)."""
    from fournil.pretrain.stage import run_pretrain
    from fournil.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    never = 10**9
    cfg = dataclasses.replace(recipe.pretrain, max_steps=s.steps, log_every=1,
                              eval_every=never, checkpoint_every=never,
                              eval_tokens=s.tokens_per_step, warmup_steps=s.warmup_lr_steps,
                              device="cpu", dtype="float32", compile=compile)
    run_pretrain(Path(s.tokens_dir), Path(s.tokenizer_dir), work / "pretrain", recipe.model,
                 cfg, recipe.seed)
    rows = [json.loads(line) for line in open(work / "pretrain" / "metrics.jsonl")]
    rows = [r for r in rows if "tokens_per_s" in r]
    if [r["step"] for r in rows] != list(range(1, s.steps + 1)):
        raise RuntimeError(f"{work}/pretrain/metrics.jsonl: expected a row per step")
    return {"step_s": [s.tokens_per_step / r["tokens_per_s"] for r in rows],
            "loss": rows[-1]["loss"]}


def run_litgpt(s: Setup, work: Path) -> dict:
    """`litgpt.pretrain.setup`, LitGPT's own loop; step times are taken where it asks its
    train DataLoader for the next batch (one per step, including the one it stops on)."""
    import litgpt.pretrain
    from litgpt import Config
    from litgpt.args import EvalArgs, TrainArgs
    from litgpt.data import DataModule
    from torch.utils.data import DataLoader

    train, val = Windows(s, stamp=True), Windows(s)

    class WindowsData(DataModule):
        def connect(self, tokenizer: object = None, batch_size: int = 1,
                    max_seq_length: int | None = None) -> None:
            if (batch_size, max_seq_length) != (s.batch_size, s.seq_len):
                raise ValueError(f"LitGPT asks for batch {batch_size} x {max_seq_length}")

        def train_dataloader(self) -> DataLoader:
            return DataLoader(train, batch_size=s.batch_size, shuffle=False)

        def val_dataloader(self) -> DataLoader:  # LitGPT checks 2 batches before training
            return DataLoader(val, batch_size=s.batch_size, shuffle=False)

    config = Config(
        name="fournil-tiny-cpu", block_size=s.seq_len, vocab_size=s.vocab_size,
        padded_vocab_size=s.vocab_size, n_layer=s.num_layers, n_head=s.num_heads,
        n_embd=s.hidden_size, n_query_groups=s.num_kv_heads, head_size=s.head_dim,
        rotary_percentage=1.0, parallel_residual=False, bias=False,
        norm_class_name="RMSNorm", norm_eps=s.rms_norm_eps, mlp_class_name="LLaMAMLP",
        intermediate_size=s.intermediate_size, rope_base=int(s.rope_theta), norm_qk=True,
    )
    never = 10**9
    # its final checkpoint re-parses sys.argv as `litgpt pretrain`'s command line (to save
    # hyperparameters.yaml): give it one it accepts
    sys.argv = [sys.argv[0], config.name]
    litgpt.pretrain.setup(
        model_name=config.name, model_config=config, out_dir=work / "out",
        precision="32-true", data=WindowsData(), devices=1, logger_name="csv", seed=s.seed,
        train=TrainArgs(save_interval=None, log_interval=1, global_batch_size=s.batch_size,
                        micro_batch_size=s.batch_size, max_tokens=s.steps * s.tokens_per_step,
                        max_norm=s.grad_clip, min_lr=s.lr * s.min_lr_ratio,
                        lr_warmup_steps=s.warmup_lr_steps, tie_embeddings=True,
                        max_seq_length=s.seq_len),
        eval=EvalArgs(interval=never, max_iters=2, initial_validation=False,
                      final_validation=False),
        optimizer={"class_path": "torch.optim.AdamW",
                   "init_args": {"lr": s.lr, "betas": (s.beta1, s.beta2),
                                 "weight_decay": s.weight_decay}},
    )
    fetched = train.fetched
    if len(fetched) != s.steps + 1:
        raise RuntimeError(f"LitGPT fetched {len(fetched)} batches for {s.steps} steps")
    logged = sorted((work / "out" / "logs" / "csv").rglob("metrics.csv"))
    losses = [row["loss"] for path in logged for row in csv.DictReader(open(path))
              if row.get("loss")]
    return {"step_s": intervals(fetched), "loss": float(losses[-1]) if losses else None}


def run_hf(s: Setup, work: Path) -> dict:
    """`transformers.Trainer` on Qwen3ForCausalLM; a callback stamps the end of each step."""
    from transformers import (
        Qwen3Config,
        Qwen3ForCausalLM,
        Trainer,
        TrainingArguments,
    )

    stamp, ended = trainer_step_clock()

    config = Qwen3Config(
        vocab_size=s.vocab_size, hidden_size=s.hidden_size, num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
        head_dim=s.head_dim, intermediate_size=s.intermediate_size,
        max_position_embeddings=s.seq_len, rope_theta=s.rope_theta, rms_norm_eps=s.rms_norm_eps,
        tie_word_embeddings=True, use_cache=False,
    )
    model = Qwen3ForCausalLM(config)
    args = TrainingArguments(
        output_dir=str(work / "out"), max_steps=s.steps, per_device_train_batch_size=s.batch_size,
        learning_rate=s.lr, adam_beta1=s.beta1, adam_beta2=s.beta2,
        weight_decay=s.weight_decay, max_grad_norm=s.grad_clip, lr_scheduler_type="cosine",
        warmup_steps=s.warmup_lr_steps, seed=s.seed, use_cpu=True, eval_strategy="no",
        save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False,
        # our window order (transformers >= 5; before, the Trainer shuffles the same windows)
        **({"train_sampling_strategy": "sequential"} if "train_sampling_strategy" in
           {f.name for f in dataclasses.fields(TrainingArguments)} else {}),
    )
    trainer = Trainer(model=model, args=args, train_dataset=Examples(s),
                      callbacks=[stamp])
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    if len(ended) != s.steps + 1:
        raise RuntimeError(f"HF Trainer ran {len(ended) - 1} steps, expected {s.steps}")
    return {"step_s": intervals(ended),
            "loss": losses[-1] if losses else None,
            "optimizer": str(getattr(args.optim, "value", args.optim))}


def run_fournil_compiled(s: Setup, work: Path) -> dict:
    return run_fournil(s, work, compile=True)


RUNS = {"fournil": run_fournil, "litgpt": run_litgpt, "hf": run_hf,
        "fournil-compiled": run_fournil_compiled}
# sides whose peer pins what the project's environment cannot take (LitGPT: huggingface-hub
# < 1.4, transformers 5.25 needs >= 2.4) run in their own (bench/peers.py); the
# HF side's transformers is the project's own ([dev]), the one fournil's exports are checked by
PEER_ENVS = {"litgpt": "litgpt"}
DEFAULT_SIDES = "fournil,fournil-compiled,litgpt,hf"
SIDE_PACKAGES = {"fournil": ("torch",), "fournil-compiled": ("torch",),
                 "litgpt": ("torch", "litgpt", "lightning"),
                 "hf": ("torch", "transformers", "accelerate")}
LABELS = {"fournil": "fournil run_pretrain", "litgpt": "LitGPT pretrain (compiled)",
          "hf": "HF Trainer (Qwen3ForCausalLM)",
          "fournil-compiled": "fournil, pretrain.compile=true"}




# --------------------------------------------------------------------------------- main




def versions(packages: tuple[str, ...]) -> str:
    """The versions this interpreter runs: each side reports its own (LitGPT's environment
    is not the bench's)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in packages:
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps a side")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of timing")
    parser.add_argument("--window", type=int, default=5,
                        help="a side's speed is its fastest run of this many timed steps")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every side this many times (passes in alternating order); "
                        "keep each side's best")
    parser.add_argument("--sides", default=DEFAULT_SIDES, help="comma-separated, from: "
                        f"{', '.join(RUNS)} (default: {DEFAULT_SIDES})")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads, every side and the ceiling (default: every core); "
                        "1 keeps a shared machine's other work from stalling OpenMP barriers")
    parser.add_argument("--data", type=Path, help="run folder for the data stages "
                        "(default: tiny-cpu's, runs/tiny-cpu; up-to-date stages are reused)")
    parser.add_argument("--work", type=Path,
                        help="working folder, kept (default: a temp folder, removed)")
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)  # internal: one side
    args = parser.parse_args()
    if args.run:
        s = Setup(**json.loads((args.work / "setup.json").read_text()))
        isolate_side(s.threads, s.seed, args.work)
        result = RUNS[args.run](s, args.work)
        result["versions"] = versions(SIDE_PACKAGES[args.run])
        (args.work / "result.json").write_text(json.dumps(result))
        return

    sides = [side for side in args.sides.split(",") if side]
    if unknown := [side for side in sides if side not in RUNS]:
        parser.error(f"--sides: unknown {', '.join(unknown)} (known: {', '.join(RUNS)})")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not 0 <= args.warmup <= args.steps - args.window or args.window < 1:
        parser.error(f"need 0 <= --warmup <= --steps - --window and --window >= 1, got "
                     f"{args.warmup}, {args.steps}, {args.window}")
    work = args.work or Path(tempfile.mkdtemp(prefix="pretrain-bench-"))
    if work.exists():
        shutil.rmtree(work)
    s = make_setup(args.data, args.steps, args.threads)
    torch.set_num_threads(s.threads)
    flops = flops_per_token(s)
    print(f"{cpu_name()}, {s.threads} threads (torch.set_num_threads, every side); "
          f"{versions(('torch',))}")
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} at start" + (
        f": other work holds the {s.threads} cores, every number below is slowed by it"
        if load > 0.5 else ""))
    print(f"model: d {s.hidden_size}, {s.num_layers} layers, {s.num_heads} heads / "
          f"{s.num_kv_heads} kv x {s.head_dim}, ff {s.intermediate_size}, vocab {s.vocab_size}, "
          f"tied; {flops['6N (blocks)'] / 6e6:.2f}M non-embedding parameters; "
          f"batch {s.batch_size} x {s.seq_len} = {s.tokens_per_step} tokens/step, fp32, AdamW")
    print(f"FLOPs per token: {flops['total'] / 1e6:.2f}M = " + " + ".join(
        f"{v / 1e6:.2f}M {k}" for k, v in flops.items() if k != "total"))

    before, linear_s = matmul_ceiling(s), linear_matmul_seconds(s)
    attention_s = attention_seconds(s)
    print(f"matmul ceiling (before the sides): {max(g for _, g in before):.1f} GFLOP/s",
          flush=True)

    results: dict[str, dict] = {}
    for repeat in range(args.repeats):
        # every other pass in reverse order: no side always runs first, or last
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            print(f"{side}: {args.steps} steps (run {repeat + 1}/{args.repeats})...", flush=True)
            python = peer_python(PEER_ENVS[side]) if side in PEER_ENVS else None
            r = in_fresh_process(__file__, side, dataclasses.asdict(s), work / f"{side}-{repeat}",
                                 python)
            timed = r["step_s"][args.warmup:]
            r["best_s"] = min(statistics.fmean(timed[i:i + args.window])
                              for i in range(0, len(timed) - args.window + 1, args.window))
            r["median_s"] = statistics.median(timed)
            if side not in results or r["best_s"] < results[side]["best_s"]:
                results[side] = r
    after = matmul_ceiling(s)  # again: the load may have changed while the sides ran
    linear_s = min(linear_s, linear_matmul_seconds(s))
    attention_s = min(attention_s, attention_seconds(s))
    print(f"load average {os.getloadavg()[0]:.2f} at the end (the bench's own threads count)")

    # the ceiling is the best the CPU did at any shape, before or after
    print(f"\n{'fp32 torch.mm, GFLOP/s':<30} {'before':>7} {'after':>7}")
    for (shape, a), (_, b) in zip(before, after, strict=True):
        print(f"{shape:<30} {a:>7.1f} {b:>7.1f}")
    peak = max(g for _, g in before + after)
    print(f"ceiling: {peak:.1f} GFLOP/s")
    print(f"a step's linear-layer matmuls alone (forward and both gradients, each timed at "
          f"its own shape): {1000 * linear_s:.0f} ms, so no trainer of this model passes "
          f"{s.tokens_per_step / linear_s:.0f} tok/s here")
    floor_s = linear_s + attention_s
    print(f"with the attention kernel (causal SDPA forward and backward, {s.num_layers} layers, "
          f"{1000 * attention_s:.0f} ms), which every side calls too: {1000 * floor_s:.0f} ms, "
          f"so no trainer passes {s.tokens_per_step / floor_s:.0f} tok/s here")

    timed_steps = args.steps - args.warmup
    print(f"\n{timed_steps} steps timed a side, after {args.warmup} warmup; tok/s: the fastest "
          f"run of {args.window} steps (median step beside it), best of {args.repeats} run(s)")
    print(f"{'side':<30} {'tok/s':>7} {'median':>7} {'GFLOP/s':>8} {'% ceiling':>9} "
          f"{'vs fournil':>10} {'last loss':>9} {'process s':>9}")
    rate = {side: s.tokens_per_step / r["best_s"] for side, r in results.items()}
    for side, r in results.items():
        gflops = rate[side] * flops["total"] / 1e9
        versus = f"{rate[side] / rate['fournil']:.2f}x" if "fournil" in rate else "-"
        loss = f"{r['loss']:.3f}" if r.get("loss") is not None else "-"
        print(f"{LABELS[side]:<30} {rate[side]:>7.0f} {s.tokens_per_step / r['median_s']:>7.0f} "
              f"{gflops:>8.1f} {100 * gflops / peak:>8.1f}% {versus:>10} {loss:>9} "
              f"{r['wall_s']:>9.0f}")
    if "hf" in results and results["hf"].get("optimizer"):
        print(f"(HF Trainer's optimizer: {results['hf']['optimizer']})")
    for side, r in results.items():
        where = f"its own environment, {ENVS / PEER_ENVS[side]}" if side in PEER_ENVS \
            else "the bench's environment"
        print(f"{LABELS[side]}: {where}; {r['versions']}")

    print()
    for side in ("fournil", "fournil-compiled"):
        if side not in rate:
            continue
        share = rate[side] * flops["total"] / 1e9 / peak
        line = (f"targets, {LABELS[side]}: {100 * share:.1f}% of the ceiling (>= 50%: "
                f"{'met' if share >= 0.5 else 'missed'})")
        if "litgpt" in rate:
            ratio = rate[side] / rate["litgpt"]
            line += f", {ratio:.2f}x LitGPT (>= 1.3x: {'met' if ratio >= 1.3 else 'missed'})"
            bound = s.tokens_per_step / floor_s / rate["litgpt"]
            line += f"; the shared matmul + attention floor allows at most {bound:.2f}x"
        print(line)
    if args.work:
        print(f"\nwork folder (each side's stderr.log, metrics, outputs): {work}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
