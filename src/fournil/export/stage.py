"""The export stage: the run's final checkpoint as a Hugging Face folder with its model card,
and, with `fournil export --gguf`, GGUF files beside it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TypedDict

from fournil.core.stage import MANIFEST, Context, Manifest, Stage, read_manifest, upstream_hash
from fournil.export.card import EvalResults, render_model_card
from fournil.export.gguf import export_gguf, gguf_path, parse_dtypes
from fournil.export.hf import export_hf
from fournil.model.transformer import Transformer
from fournil.provenance.lineage import copy_lineage
from fournil.train.post import final_model


class ExportCounts(TypedDict):
    parameters: int


class ExportManifest(Manifest):
    counts: ExportCounts
    checkpoint: str  # the checkpoint exported


def run(ctx: Context) -> ExportManifest:
    """Bake and `fournil export`: the final model (dpo's, else sft's, else pretrain's) with a
    card whose every number comes from the manifests of the stages the run ran."""
    recipe, out = ctx.recipe, ctx.out("export")
    gguf_types = parse_dtypes(ctx.option("gguf", []))  # checked before anything is written
    result_files = [Path(p) for p in ctx.option("results") or []]
    results = [read_results(p) for p in result_files]
    dirs = {name: ctx.folder(name) for name in ctx.pipeline if name != "export"}
    stage = Stage("export", out, inputs={n: upstream_hash(d) for n, d in dirs.items()},
                  params={"name": recipe.name, "generate": vars(recipe.generate),
                          **({"results": [hashlib.sha256(p.read_bytes()).hexdigest()
                                          for p in result_files]} if results else {})})
    manifest = stage.done() or _export(stage, ctx, dirs, results)
    for dtype in gguf_types:  # next to the HF files, from them
        path = export_gguf(out, gguf_path(out, dtype), dtype, name=recipe.name)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return manifest


def read_results(path: Path) -> EvalResults:
    """A `fournil eval --report` results.json, checked: a list of {"model", "tasks"}."""
    try:
        models = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable results.json ({e})") from None
    if not isinstance(models, list) or not all(
            isinstance(m, dict) and isinstance(m.get("model"), str)
            and isinstance(m.get("tasks"), dict) for m in models):
        raise ValueError(f"{path}: expected the results.json of `fournil eval --report` (a "
                         "list of {\"model\", \"tasks\"} objects)")
    return f"{path.parent.name}/{path.name}", models


def _export(stage: Stage, ctx: Context, dirs: dict, results: list[EvalResults]
            ) -> ExportManifest:
    recipe = ctx.recipe
    work = stage.start()
    checkpoint = final_model(ctx)
    model = Transformer.load(checkpoint)
    manifests = {name: read_manifest(d) for name, d in dirs.items()}
    languages = sorted({s.language for s in recipe.ingest.sources if s.language} or {"fr"})
    card = render_model_card(recipe.name, model.config.to_dict(), model.num_parameters(),
                             manifests, languages, results=results)
    g = recipe.generate
    export_hf(model, work / "hf", checkpoint, card,
              generation={"temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p,
                          "max_new_tokens": g.max_new_tokens, "do_sample": g.temperature > 0})
    for item in (work / "hf").iterdir():  # the HF files sit at the top of the export folder
        item.rename(work / item.name)
    (work / "hf").rmdir()
    copy_lineage(checkpoint, work)  # a base's lineage, beside the weights it is part of
    assert not (work / MANIFEST).exists()
    return stage.finish({"parameters": model.num_parameters()}, checkpoint=str(checkpoint))
