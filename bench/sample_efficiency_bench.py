"""Sample efficiency: Muon + warmup-stable-decay against AdamW + cosine, same model, same data.

    python bench/sample_efficiency_bench.py               # tiny-cpu's model, ~15 min on 2 cores
    python bench/sample_efficiency_bench.py --steps 150   # quicker, noisier

The target (issue 4): Muon + WSD reaches the AdamW + cosine run's final validation
bits-per-byte in <= 0.7x the tokens. A WSD run only shows its quality after its decay, so
each budget is its own run, decayed at its end (as in the MiniCPM and DeepSeek WSD studies),
not a point in the middle of a longer run:

- baseline: AdamW + cosine for N steps (tiny-cpu's recipe), its final val bpb the target;
- Muon + WSD for 0.5 N and 0.7 N steps: does the shorter run reach the target?
- AdamW + cosine for 0.7 N steps: the control (what the same budget gives the baseline).

Every run is the real pretrain stage (`run_pretrain`) on the bundled corpus prepared by the
real ingest, curate, tokenizer and tokenize stages of `recipes/tiny-cpu.toml`, same seed and
data order; val bpb on the same held-out tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from fournil.bake import prepare_data
from fournil.layout import RunLayout
from fournil.recipe import load_recipe
from fournil.train.config import OptimizerConfig
from fournil.train.pretrain import run_pretrain

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="the baseline's steps (N)")
    parser.add_argument("--muon-lr", type=float, default=0.02)
    parser.add_argument("--work", type=Path, help="working folder (default: a temp folder)")
    args = parser.parse_args()
    recipe = load_recipe(ROOT / "recipes" / "tiny-cpu.toml")
    work = args.work or Path(tempfile.mkdtemp(prefix="sample-efficiency-"))
    layout = RunLayout(work / "data")
    prepare_data(recipe, layout)

    base = dataclasses.replace(recipe.pretrain, eval_every=10**9, checkpoint_every=10**9,
                               log_every=50)
    adamw = dataclasses.replace(base, optimizer=recipe.pretrain.optimizer, schedule="cosine")
    muon = dataclasses.replace(
        base, schedule="wsd", decay_fraction=0.3, min_lr_ratio=0.0,
        optimizer=OptimizerConfig(name="muon", lr=recipe.pretrain.optimizer.lr,
                                  weight_decay=recipe.pretrain.optimizer.weight_decay,
                                  muon_lr=args.muon_lr))
    n = args.steps
    runs = [("adamw + cosine (baseline)", adamw, n),
            ("muon + wsd", muon, round(0.5 * n)),
            ("muon + wsd", muon, round(0.7 * n)),
            ("adamw + cosine (control)", adamw, round(0.7 * n))]
    tokens_per_step = base.batch_size * base.grad_accum * base.seq_len
    results = []
    for k, (name, cfg, steps) in enumerate(runs):
        cfg = dataclasses.replace(cfg, max_steps=steps,
                                  warmup_steps=min(cfg.warmup_steps, steps // 10))
        start = time.perf_counter()
        manifest = run_pretrain(layout.tokens, layout.tokenizer, work / f"run-{k}", recipe.model,
                                cfg, recipe.seed)
        results.append((name, steps, manifest["counts"]["val_bpb"], time.perf_counter() - start))

    target = results[0][2]
    print(f"\nmodel {manifest['counts']['parameters'] / 1e6:.2f}M parameters, "
          f"{tokens_per_step:,} tokens/step; target: the baseline's final val bpb {target:.4f}")
    print(f"{'run':<28} {'steps':>6} {'tokens':>10} {'x baseline':>10} {'val bpb':>8} "
          f"{'reaches':>8} {'seconds':>8}")
    for name, steps, bpb, seconds in results:
        print(f"{name:<28} {steps:>6} {steps * tokens_per_step:>10,} {steps / n:>10.2f} "
              f"{bpb:>8.4f} {'yes' if bpb <= target else 'no':>8} {seconds:>8.0f}")
    reached = [steps / n for name, steps, bpb, _ in results[1:] if "muon" in name
               and bpb <= target]
    print(f"\nMuon + WSD reaches the target in {min(reached):.2f}x the tokens (target <= 0.7x)"
          if reached else "\nMuon + WSD does not reach the target within 0.7x the tokens")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
