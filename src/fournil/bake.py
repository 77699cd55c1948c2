"""`fournil bake`: a recipe through every stage, from raw documents to an exported model.

The stages are `fournil.stages.STAGES`, run in that order: the core ones always, the optional
ones (synth, sft, dpo) when the recipe's `stages` names them. Each skips itself when its
manifest matches its inputs and parameters, and only ever makes complete output visible, so a
bake killed at any point and started again picks up where it was and ends with the same
result.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fournil.core.stage import read_manifest
from fournil.model.generate import generate_text, load_for_generation
from fournil.recipe import Recipe
from fournil.stages import STAGES, RunLayout, StageContext

log = logging.getLogger("fournil")


def run_stages(recipe: Recipe, layout: RunLayout, until: str | None = None) -> None:
    """Every stage the recipe runs, in order; with `until`, up to and including that one (the
    data stages before a pretraining bench: `until="tokens"`)."""
    ctx = StageContext(recipe, layout)
    for spec in STAGES:
        if recipe.runs(spec.name):
            spec.entry()(ctx)
        if spec.name == until:
            return


def bake(recipe: Recipe, run_dir: str | Path | None = None) -> dict:
    """Run every stage of `recipe`; returns a summary (paths, bits-per-byte, a sample)."""
    layout = RunLayout(recipe.run_dir(run_dir))
    started = time.time()
    log.info("bake %s -> %s", recipe.name, layout.root)
    run_stages(recipe, layout)
    evaluation = read_manifest(layout.eval)
    model, tokenizer = load_for_generation(layout.export)
    g = recipe.generate
    sample = generate_text(model, tokenizer, g.prompt, max_new_tokens=g.max_new_tokens,
                           temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=g.seed)
    report = layout.report / "report.md"
    return {
        "run_dir": str(layout.root),
        "export": str(layout.export),
        "val_bpb": evaluation["counts"]["val_bpb"],
        "val_bpb_by_source": {s: r["bpb"] for s, r in evaluation["bpb"]["by_source"].items()},
        "prompt": g.prompt,
        "sample": sample,
        "report": str(report) if report.exists() else None,
        "seconds": round(time.time() - started, 1),
    }
