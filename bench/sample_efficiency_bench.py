"""Sample efficiency: Muon + warmup-stable-decay against AdamW, one change per arm, 3 seeds.

    python bench/sample_efficiency_bench.py --work /tmp/sample-eff      # N = 400, ~2 h, 2 cores
    python bench/sample_efficiency_bench.py --steps 200 --work /tmp/se  # bench/README.md's run
    python bench/sample_efficiency_bench.py --steps 20 --seeds 2        # checks the plumbing

The question (issue 4): does Muon + WSD reach the AdamW + cosine run's final validation
bits-per-byte in <= 0.7x the tokens, and (issue 14) how much of that is the schedule and how
much the optimizer? Three arms, each changing one thing from the one before:

- adamw + cosine: tiny-cpu's recipe (warmup, cosine to 0.1x the learning rate);
- adamw + wsd: the schedule changes (warmup, plateau, the last 30% decaying linearly to 0);
- muon + wsd: the optimizer changes (Muon on the hidden matrices, AdamW on the rest).

A WSD run only shows its quality after its decay, so each budget is its own run, decayed at
its end (as in the MiniCPM and DeepSeek WSD studies), not a point in a longer run. The target
is AdamW + cosine for N steps; every arm runs 0.5 N and 0.7 N steps. Each arm and budget runs
under every seed (`--seeds`; the seed draws the model's initial weights and the order of the
training windows): a seed's runs share both, so arms are compared seed by seed.

Every run is the real pretrain stage (`run_pretrain`) on the bundled corpus prepared by the
real ingest, curate, tokenizer and tokenize stages of `recipes/tiny-cpu.toml` (data prepared
once, with the recipe's seed), val bpb on the same held-out tokens. Finished runs are kept in
`<work>/results.jsonl` and read back: a killed run, started again with the same `--work`,
redoes only the runs that had not finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fournil.bake import run_stages
from fournil.pretrain.config import PretrainConfig
from fournil.pretrain.stage import run_pretrain
from fournil.recipe import load_recipe
from fournil.stages import RunLayout
from fournil.train.config import OptimizerConfig

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "adamw + cosine"
ARMS = (BASELINE, "adamw + wsd", "muon + wsd")


def arm_configs(pretrain: PretrainConfig, muon_lr: float) -> dict[str, PretrainConfig]:
    """The three arms: from the recipe's AdamW + cosine, the schedule changes, then the
    optimizer, so that two neighbouring arms differ in one thing."""
    base = dataclasses.replace(pretrain, eval_every=10**9, checkpoint_every=10**9, log_every=50)
    wsd = dataclasses.replace(base, schedule="wsd", decay_fraction=0.3, min_lr_ratio=0.0)
    muon = OptimizerConfig(name="muon", lr=pretrain.optimizer.lr,
                           weight_decay=pretrain.optimizer.weight_decay, muon_lr=muon_lr)
    return {BASELINE: base, "adamw + wsd": wsd,
            "muon + wsd": dataclasses.replace(wsd, optimizer=muon)}


def run_key(cfg: PretrainConfig, model: object, seed: int) -> str:
    """What a run's result depends on: a result in results.jsonl under another key (another
    `--muon-lr`, another recipe) is not reused."""
    blob = json.dumps([dataclasses.asdict(cfg), dataclasses.asdict(model), seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_results(path: Path) -> dict[str, dict]:
    """Finished runs by key. A line that does not parse (a run killed while writing it) is
    reported and skipped: that run is done again."""
    results: dict[str, dict] = {}
    if not path.exists():
        return results
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            results[row["key"]] = row
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            print(f"{path}:{number}: skipped, not a finished run ({error})", file=sys.stderr)
    return results


def spread(values: list[float]) -> str:
    """mean ± sample std [min, max]; one value alone has no spread."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return (f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} "
            f"[{min(values):.4f}, {max(values):.4f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="the baseline's steps (N)")
    parser.add_argument("--budgets", default="0.5,0.7",
                        help="the shorter runs' steps, as fractions of N (default 0.5,0.7)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds per arm and budget: the recipe's seed, +1, +2, ...")
    parser.add_argument("--muon-lr", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine, other work "
                        "stalls the OpenMP barriers of 2 threads, several times slower)")
    parser.add_argument("--work", type=Path,
                        help="working folder, kept and resumed (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(ROOT / "recipes" / "tiny-cpu.toml")
    work = args.work or Path(tempfile.mkdtemp(prefix="sample-efficiency-"))
    layout = RunLayout(work / "data")
    run_stages(recipe, layout, until="tokens")

    configs = arm_configs(recipe.pretrain, args.muon_lr)
    n = args.steps
    budgets = [round(float(f) * n) for f in args.budgets.split(",")]
    seeds = [recipe.seed + i for i in range(args.seeds)]
    # seed by seed, so that a stopped run leaves whole seeds behind
    plan = [(arm, steps, seed) for seed in seeds
            for arm, steps in [(BASELINE, n)] + [(a, b) for b in budgets for a in ARMS]]
    results_path = work / "results.jsonl"
    done = read_results(results_path)
    rows: list[dict] = []
    for k, (arm, steps, seed) in enumerate(plan, 1):
        cfg = configs[arm]
        cfg = dataclasses.replace(cfg, max_steps=steps,
                                  warmup_steps=min(cfg.warmup_steps, steps // 10))
        key = run_key(cfg, recipe.model, seed)
        if key in done:
            rows.append(done[key])
            continue
        print(f"[{k}/{len(plan)}] {arm}, {steps} steps, seed {seed}", flush=True)
        load_start = os.getloadavg()[0]
        start = time.perf_counter()
        manifest = run_pretrain(layout.tokens, layout.tokenizer,
                                work / "runs" / f"{arm.replace(' + ', '-')}-{steps}-s{seed}",
                                recipe.model, cfg, seed)
        row = {"key": key, "arm": arm, "steps": steps, "seed": seed,
               "val_bpb": manifest["counts"]["val_bpb"],
               "parameters": manifest["counts"]["parameters"],
               "seconds": round(time.perf_counter() - start, 1),
               "load": [round(load_start, 2), round(os.getloadavg()[0], 2)]}
        with results_path.open("a") as out:  # one line per finished run, appended whole
            out.write(json.dumps(row) + "\n")
        rows.append(row)

    tokens_per_step = recipe.pretrain.batch_size * recipe.pretrain.grad_accum * \
        recipe.pretrain.seq_len
    bpb = {(r["arm"], r["steps"], r["seed"]): r["val_bpb"] for r in rows}
    target = {seed: bpb[BASELINE, n, seed] for seed in seeds}
    loads = [x for r in rows for x in r["load"]]
    print(f"\nmodel {rows[0]['parameters'] / 1e6:.2f}M parameters, {tokens_per_step:,} "
          f"tokens/step; seeds {', '.join(map(str, seeds))} (model init and data order); "
          f"load average {min(loads):.2f}-{max(loads):.2f} over the runs")
    print(f"target: each seed's {BASELINE} at {n} steps; 'reaches': seeds whose run is at or "
          f"below its own seed's target")
    print(f"val bpb: mean ± std [min, max] over {len(seeds)} seed(s); Δ target: the run minus "
          f"its seed's target, mean [min, max]\n")
    print(f"{'arm':<16} {'steps':>5} {'tokens':>9} {'x N':>5}  {'val bpb':<33} "
          f"{'Δ target':<28} {'reaches':>7} {'s/run':>6}")
    for arm, steps in [(BASELINE, n)] + [(a, b) for b in budgets for a in ARMS]:
        values = [bpb[arm, steps, s] for s in seeds]
        deltas = [bpb[arm, steps, s] - target[s] for s in seeds]
        reaches = sum(d <= 0 for d in deltas)
        seconds = statistics.mean(r["seconds"] for r in rows
                                  if (r["arm"], r["steps"]) == (arm, steps))
        delta = "" if steps == n and arm == BASELINE else \
            f"{statistics.mean(deltas):+.4f} [{min(deltas):+.4f}, {max(deltas):+.4f}]"
        print(f"{arm:<16} {steps:>5} {steps * tokens_per_step:>9,} {steps / n:>5.2f}  "
              f"{spread(values):<33} {delta:<28} {f'{reaches}/{len(seeds)}':>7} "
              f"{seconds:>6.0f}")

    print("\none change at a time, seed by seed (val bpb difference, mean [min, max]):")
    for steps in budgets:
        for label, worse, better in [("schedule (adamw + wsd - adamw + cosine)", BASELINE,
                                      "adamw + wsd"),
                                     ("optimizer (muon + wsd - adamw + wsd)", "adamw + wsd",
                                      "muon + wsd")]:
            d = [bpb[better, steps, s] - bpb[worse, steps, s] for s in seeds]
            print(f"  {steps:>4} steps, {label:<40} {statistics.mean(d):+.4f} "
                  f"[{min(d):+.4f}, {max(d):+.4f}]")
    for arm in ARMS[1:]:
        reached = [steps / n for steps in budgets
                   if all(bpb[arm, steps, s] <= target[s] for s in seeds)]
        print(f"\n{arm} reaches the target under every seed in {min(reached):.2f}x the tokens"
              if reached else f"\n{arm} does not reach the target under every seed within "
              f"{max(budgets) / n:.2f}x the tokens", end="")
    print(f"\nwork folder: {work} (results.jsonl: the finished runs)")


if __name__ == "__main__":
    main()
