"""`fournil bake`: a recipe through every stage, from raw documents to an exported model.

Each stage skips itself when its manifest matches its inputs and parameters, and only ever
makes complete output visible, so a bake killed at any point and started again picks up
where it was and ends with the same result.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fournil.corpus.ingest import run_ingest
from fournil.curate.stage import run_curate
from fournil.data.pack import run_tokenize
from fournil.eval.stage import run_eval
from fournil.export.stage import run_export
from fournil.layout import RunLayout
from fournil.recipe import Recipe
from fournil.serve.generate import generate_text, load_for_generation
from fournil.tokenizer.stage import run_tokenizer
from fournil.train.pretrain import final_checkpoint, run_pretrain

log = logging.getLogger("fournil")


def prepare_data(recipe: Recipe, layout: RunLayout) -> None:
    """The data stages: ingest, curate, tokenizer, tokenize (each skipped when up to date)."""
    run_ingest(recipe.ingest.sources, layout.ingest, recipe.resolve, recipe.ingest.rows_per_shard)
    run_curate(layout.ingest, layout.curate, recipe.curate, recipe.ingest.rows_per_shard)
    run_tokenizer(layout.curate, layout.tokenizer, recipe.tokenizer, recipe.model.max_seq_len)
    run_tokenize(layout.curate, layout.tokenizer, layout.tokens, recipe.tokenize)


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
        "seconds": round(time.time() - started, 1),
    }
