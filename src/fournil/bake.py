"""`fournil bake`: a recipe through every stage, from raw documents to an exported model.

Each stage skips itself when its manifest matches its inputs and parameters, and only ever
makes complete output visible, so a bake killed at any point and started again picks up
where it was and ends with the same result.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from fournil.core.layout import RunLayout
from fournil.core.stage import Stage, upstream_hash
from fournil.curate.stage import run_curate
from fournil.dpo.stage import run_dpo
from fournil.eval.stage import run_eval
from fournil.export.stage import final_model, run_export
from fournil.ingest.stage import run_ingest
from fournil.model.generate import generate_text, load_for_generation
from fournil.pretrain.stage import final_checkpoint, run_pretrain
from fournil.recipe import Recipe, RecipeError
from fournil.sft.stage import run_sft
from fournil.synth.stage import run_synth
from fournil.tokenizer.stage import run_tokenizer
from fournil.tokens.stage import run_tokenize

log = logging.getLogger("fournil")


def prepare_data(recipe: Recipe, layout: RunLayout) -> None:
    """The data stages: ingest, curate, synth (when the recipe names it), tokenizer, tokenize;
    each skipped when up to date."""
    run_ingest(recipe.ingest.sources, layout.ingest, recipe.resolve, recipe.ingest.rows_per_shard,
               strict=recipe.ingest.strict)
    run_curate(layout.ingest, layout.curate, recipe.curate, recipe.ingest.rows_per_shard)
    if "synth" in recipe.stages:
        run_synth(layout.curate, layout.synth, recipe.synth, recipe.seed,
                  allowed_licenses=recipe.curate.allowed_licenses)
    run_tokenizer(layout.curate, layout.tokenizer, recipe.tokenizer, recipe.model.max_seq_len)
    run_tokenize(layout.curate, layout.tokenizer, layout.tokens, recipe.tokenize,
                 synth_dir=layout.synth)


def post_inputs(recipe: Recipe, layout: RunLayout, stage: str, data: list[Path] | None = None,
                base: Path | None = None) -> tuple[list[Path], Path]:
    """The data and the starting model of a post-training stage (`sft` or `dpo`): the given
    ones, else the recipe's `<stage>.data` / `<stage>.base`, else the run's synth samples (sft)
    and the final checkpoint of the stage before (sft: pretrain; dpo: sft, else pretrain)."""
    cfg = getattr(recipe, stage)
    data = data or [recipe.resolve(p) for p in cfg.data]
    if not data and stage == "sft" and layout.synth.exists():
        data = [layout.synth]
    if not data:
        raise RecipeError(f"{stage}: no data; pass --data or set {stage}.data in the recipe")
    if base or cfg.base:
        return data, base or recipe.resolve(cfg.base)
    for before in ("sft", "pretrain") if stage == "dpo" else ("pretrain",):
        if (getattr(layout, before) / "manifest.json").exists():
            return data, final_checkpoint(getattr(layout, before))
    raise RecipeError(f"{stage}: no base model; run pretrain first, or pass --base")


def run_task_eval(recipe: Recipe, layout: RunLayout) -> dict | None:
    """After post-training: the model before it and the final one, side by side on the
    recipe's `[eval] tasks` (default: bpb, copy and the synth stage's held-out ocr / rag),
    into `report/` (report.md with plots, results.json). None when there is nothing to do."""
    from fournil.eval.stage import model_fingerprint
    from fournil.eval.tasks import EvalSettings, default_tasks, evaluate, parse_task
    from fournil.report.markdown import write_report

    final = final_model(recipe, layout)
    models = {"pretrain": final_checkpoint(layout.pretrain)}
    for name in ("sft", "dpo"):
        if name in recipe.stages:
            models[name] = final_checkpoint(getattr(layout, name))
    config = recipe.eval
    tasks = ([parse_task(t, recipe.resolve) for t in config.tasks] if config.tasks
             else default_tasks(layout.root))
    if len(models) < 2 and not config.tasks or not tasks:
        return None
    settings = EvalSettings(run_dir=layout.root, seq_len=recipe.pretrain.seq_len,
                            bpb_bytes_per_source=config.bpb_bytes_per_source,
                            max_items=config.max_items, max_new_tokens=config.max_new_tokens)
    stage = Stage("report", layout.report,
                  inputs={name: model_fingerprint(path) for name, path in models.items()}
                  | {"synth": upstream_hash(layout.synth) if layout.synth.exists() else ""},
                  # the tasks run, not the recipe's list: an empty list means the defaults
                  params={**dataclasses.asdict(config), "tasks": [t.name for t in tasks],
                          "final": str(final)})
    if manifest := stage.done():
        return manifest
    work = stage.start()
    results = evaluate([f"{name}={path}" for name, path in models.items()], tasks, settings,
                       device=recipe.pretrain.device)
    write_report(results, work)
    scores = [{**r, "tasks": {name: {k: v for k, v in task.items() if k != "items"}
                              for name, task in r["tasks"].items()}} for r in results]
    return stage.finish({"models": len(models), "tasks": len(tasks)}, results=scores)


def bake(recipe: Recipe, run_dir: str | Path | None = None) -> dict:
    """Run every stage of `recipe`; returns a summary (paths, bits-per-byte, a sample)."""
    layout = RunLayout(recipe.run_dir(run_dir))
    started = time.time()
    log.info("bake %s -> %s", recipe.name, layout.root)
    prepare_data(recipe, layout)
    run_pretrain(layout.tokens, layout.tokenizer, layout.pretrain, recipe.model,
                 recipe.pretrain, recipe.seed, teacher_dir=recipe.teacher_dir())
    evaluation = run_eval(final_checkpoint(layout.pretrain), layout.tokens, layout.eval,
                          recipe.pretrain.seq_len, recipe.pretrain.eval_tokens,
                          device=recipe.pretrain.device)
    if "sft" in recipe.stages:
        run_sft(*post_inputs(recipe, layout, "sft"), layout.sft, recipe.sft, recipe.seed)
    if "dpo" in recipe.stages:
        run_dpo(*post_inputs(recipe, layout, "dpo"), layout.dpo, recipe.dpo, recipe.seed)
    report = run_task_eval(recipe, layout)
    run_export(recipe, layout)
    model, tokenizer = load_for_generation(layout.export)
    g = recipe.generate
    sample = generate_text(model, tokenizer, g.prompt, max_new_tokens=g.max_new_tokens,
                           temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=g.seed)
    return {
        "run_dir": str(layout.root),
        "export": str(layout.export),
        "val_bpb": evaluation["counts"]["val_bpb"],
        "val_bpb_by_source": {s: r["bpb"] for s, r in evaluation["bpb"]["by_source"].items()},
        "prompt": g.prompt,
        "sample": sample,
        "report": str(layout.report / "report.md") if report else None,
        "seconds": round(time.time() - started, 1),
    }
