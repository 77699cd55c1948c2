"""Model FLOPs utilisation of a recipe's pretraining on this machine's GPU.

    python bench/mfu_bench.py                                   # recipes/gpu-150m.toml, 40 steps
    python bench/mfu_bench.py --recipe recipes/gpu-350m.toml --steps 30
    python bench/mfu_bench.py --recipe recipes/smoke.toml --device cpu --steps 12   # a CPU check

Runs the recipe's data stages (each reused when up to date under `--data`), then the real
pretrain stage for `--steps` optimizer steps with the recipe's model, batch, optimizer, MTP,
dtype and compile setting: a metrics row every step, evaluation and checkpoints only at the
end. It prints the medians over the steps of the trainer's own `tokens_per_s` and
`model_flops_per_s` (`fournil.train.flops`: 6N + 6dV + 12 L d_attn T per token), and MFU:
that over the GPU's dense bf16 peak, which is the peer here. The first `--warmup` steps
(compilation, allocator warmup) are left out. Also the peak GPU memory next to
`fournil.pretrain.memory`'s estimate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
NEVER = 10**9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "gpu-150m.toml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out")
    parser.add_argument("--device", help="instead of the recipe's pretrain.device")
    parser.add_argument("--data", type=Path, help="run folder of the data stages (kept)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fournil-mfu-bench"),
                        help="the pretrain stage's folder, emptied first")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")

    from fournil.bake import run_stages
    from fournil.core.device import pick_device
    from fournil.pretrain.memory import estimate_memory
    from fournil.pretrain.stage import run_pretrain
    from fournil.recipe import load_recipe
    from fournil.stages import RunLayout
    from fournil.tokenizer.train import load_tokenizer
    from fournil.train.flops import bf16_peak_flops

    recipe = load_recipe(args.recipe)
    p = recipe.pretrain
    cfg = dataclasses.replace(p, max_steps=args.steps, log_every=1, eval_every=NEVER,
                              checkpoint_every=NEVER, device=args.device or p.device,
                              eval_tokens=p.batch_size * p.seq_len)
    device = pick_device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"{args.recipe}: pretrain.device is {cfg.device} but torch sees no GPU; "
                 "pass --device cpu for a check on this machine")
    layout = RunLayout(recipe.run_dir(args.data or ROOT / "runs" / recipe.name))
    run_stages(recipe, layout, until="tokens")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"

    out = args.work / "pretrain"
    for path in (out, out.with_name(out.name + ".partial")):
        if path.exists():
            shutil.rmtree(path)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run_pretrain(layout.tokens, layout.tokenizer, out, recipe.model, cfg, recipe.seed)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "tokens_per_s" in r and r["step"] > args.warmup]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    flops = median("model_flops_per_s") / median("tokens_per_s")
    has_mfu = "mfu" in rows[0]  # the trainer's: a GPU in its table, training in bf16
    print(f"\n{args.recipe.name} on {name}: {cfg.batch_size * cfg.grad_accum * cfg.seq_len:,} "
          f"tokens/step, {cfg.dtype}, compile={cfg.compile}, {flops / 1e6:,.1f} MFLOP/token; "
          f"median of {len(rows)} steps after {args.warmup}")
    mfu = f", MFU {median('mfu'):.1%}" if has_mfu else ""
    print(f"{median('tokens_per_s'):,.0f} tok/s, {median('model_flops_per_s') / 1e9:,.1f} "
          f"model GFLOP/s{mfu}")
    if has_mfu:
        verdict = "met" if median("mfu") >= 0.45 else "missed"
        print(f"against {bf16_peak_flops(name) / 1e12:,.0f} TFLOP/s dense bf16 ({name}): "
              f"MFU >= 45% {verdict}")
    else:
        print(f"no MFU on {name}: the trainer logs it in bf16 runs on the GPUs of "
              "fournil.train.flops.BF16_PEAK_FLOPS")
    if device.type == "cuda":
        vocab_size = load_tokenizer(layout.tokenizer).get_vocab_size()
        estimate = estimate_memory(recipe.model, cfg, vocab_size).total_gib
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB "
              f"allocated (estimate {estimate:.1f} GiB)")


if __name__ == "__main__":
    main()
