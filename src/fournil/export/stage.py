"""The export stage: the final checkpoint as a Hugging Face folder with its model card."""

from __future__ import annotations

from pathlib import Path

from fournil.core.layout import RunLayout
from fournil.core.stage import MANIFEST, Stage, read_manifest, upstream_hash
from fournil.export.card import render_model_card
from fournil.export.hf import export_hf
from fournil.model.transformer import Transformer
from fournil.pretrain.stage import final_checkpoint
from fournil.recipe import Recipe

CARD_STAGES = ("ingest", "curate", "tokenize", "pretrain", "eval")
OPTIONAL_STAGES = ("synth", "sft", "dpo")  # in the card when the recipe runs them


def _stage_dir(layout: RunLayout, name: str) -> Path:
    return layout.tokens if name == "tokenize" else getattr(layout, name)


def final_model(recipe: Recipe, layout: RunLayout) -> Path:
    """The checkpoint the run ends with: that of the last post-training stage the recipe names
    (dpo, then sft), else pretrain's."""
    last = next((s for s in ("dpo", "sft") if s in recipe.stages), "pretrain")
    return final_checkpoint(getattr(layout, last))


def run_export(recipe: Recipe, layout: RunLayout, out_dir: Path | None = None) -> dict:
    out_dir = Path(out_dir or layout.export)
    names = CARD_STAGES + tuple(s for s in OPTIONAL_STAGES if s in recipe.stages)
    if (layout.report / MANIFEST).exists():  # task scores before and after post-training
        names += ("report",)
    dirs = {name: _stage_dir(layout, name) for name in names}
    stage = Stage("export", out_dir, inputs={n: upstream_hash(d) for n, d in dirs.items()},
                  params={"name": recipe.name, "generate": vars(recipe.generate)})
    if manifest := stage.done():
        return manifest
    work = stage.start()
    checkpoint = final_model(recipe, layout)
    model = Transformer.load(checkpoint)
    manifests = {name: read_manifest(d) for name, d in dirs.items()}
    languages = sorted({s.language for s in recipe.ingest.sources if s.language} or {"fr"})
    card = render_model_card(recipe.name, model.config.to_dict(), model.num_parameters(),
                             manifests, languages)
    g = recipe.generate
    export_hf(model, work / "hf", checkpoint, card,
              generation={"temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p,
                          "max_new_tokens": g.max_new_tokens, "do_sample": g.temperature > 0})
    for item in (work / "hf").iterdir():  # the HF files sit at the top of the export folder
        item.rename(work / item.name)
    (work / "hf").rmdir()
    assert not (work / MANIFEST).exists()
    return stage.finish({"parameters": model.num_parameters()},
                        checkpoint=str(checkpoint))
