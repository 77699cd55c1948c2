"""The report stage: the run's models before and after post-training, side by side.

Every model the run trained (pretrain's final checkpoint, then sft's and dpo's when the recipe
runs them) on the recipe's `[eval] tasks` (default: bpb, copy and the synth stage's held-out
ocr / rag), into `report/`: report.md with plots, results.json, and the scores in the manifest
for the model card. With nothing to compare (one model and no `[eval] tasks`), the manifest
says so and nothing else is written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

from fournil.core.stage import Context, Manifest, Stage, upstream_hash
from fournil.eval.report import write_report
from fournil.eval.stage import model_fingerprint
from fournil.eval.tasks import evaluate, select_tasks, settings_for
from fournil.train.post import final_model, trained_models


class ReportCounts(TypedDict):
    models: int
    tasks: int  # 0: nothing to compare


class ModelScores(TypedDict):
    model: str  # its label: pretrain, sft, dpo
    path: str
    engine: str
    parameters: int
    tasks: dict[str, dict[str, Any]]  # task name -> its scores (eval.tasks)


class ReportManifest(Manifest):
    counts: ReportCounts
    results: list[ModelScores]


def run(ctx: Context) -> ReportManifest:
    """Bake and `fournil report`: the report of the run's models."""
    recipe, config = ctx.recipe, ctx.recipe.eval
    run_dir = ctx.folder("pretrain").parent
    models = trained_models(ctx)
    tasks = select_tasks(config, run_dir, resolve=recipe.resolve)
    if len(models) < 2 and not config.tasks:
        tasks = []  # one model, no tasks asked for: nothing to compare
    synth = ctx.folder("synth")
    stage = Stage("report", ctx.out("report"),
                  inputs={name: model_fingerprint(path) for name, path in models.items()}
                  | {"synth": upstream_hash(synth) if synth.exists() else ""},
                  # the tasks run, not the recipe's list: an empty list means the defaults
                  params={**dataclasses.asdict(config), "tasks": [t.name for t in tasks],
                          "final": str(final_model(ctx))})
    if manifest := stage.done():
        return manifest
    work = stage.start()
    if not tasks:
        return stage.finish({"models": len(models), "tasks": 0}, results=[])
    results = evaluate([f"{name}={path}" for name, path in models.items()], tasks,
                       settings_for(config, run_dir, recipe.pretrain.seq_len),
                       device=recipe.pretrain.device)
    write_report(results, work)
    scores = [{**r, "tasks": {name: {k: v for k, v in task.items() if k != "items"}
                              for name, task in r["tasks"].items()}} for r in results]
    return stage.finish({"models": len(models), "tasks": len(tasks)}, results=scores)
