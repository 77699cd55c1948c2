"""The eval stage: held-out bits-per-byte of a model, overall and per source, and per language
when given the curate stage the tokens were made from (its `lang` column).

Task evaluations (multiple choice, OCR, cited RAG) and comparisons of several models are
`fournil.eval.tasks`; this stage is the one number every bake records. `fournil eval` also
runs those comparisons (`--model`, `--task`, `--report`) and scores GGUF files (`--gguf`),
printing their tables without touching the stage's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from fournil.core.device import autocast_for, pick_device
from fournil.core.stage import Context, Manifest, Stage, hash_files, upstream_hash
from fournil.core.validation import RecipeError
from fournil.eval.bpb import Bpb, HeldOut, Score, bits_per_byte, document_languages
from fournil.eval.gguf_bpb import format_table as format_gguf_table
from fournil.eval.gguf_bpb import gguf_bpb
from fournil.eval.report import format_table, write_report
from fournil.eval.tasks import evaluate, select_tasks, settings_for
from fournil.model.transformer import Transformer
from fournil.tokenizer.train import load_tokenizer, token_byte_lengths
from fournil.train.checkpoint import final_checkpoint


class EvalCounts(TypedDict):
    val_bpb: float
    val_loss: float
    tokens: int
    bytes: int


class BpbByLanguage(Bpb, total=False):
    by_language: dict[str, Score]  # when the curate stage's detected languages were given


class EvalManifest(Manifest):
    counts: EvalCounts
    bpb: BpbByLanguage


def run(ctx: Context) -> EvalManifest | None:
    """Bake, and `fournil eval [MODEL]`: the held-out bpb of the final pretrain checkpoint (or
    MODEL) into the run's eval folder. With --model/--task/--report or --gguf, `fournil eval`
    compares models or scores GGUF files instead, prints the table and returns None."""
    if ctx.option("gguf"):
        return score_gguf(ctx)
    if ctx.option("task") or ctx.option("report") or ctx.option("models"):
        return compare(ctx)
    recipe = ctx.recipe
    model = Path(ctx.option("model") or final_checkpoint(ctx.folder("pretrain")))
    return run_eval(model, ctx.folder("tokens", "tokens"), ctx.out("eval"),
                    recipe.pretrain.seq_len, recipe.pretrain.eval_tokens,
                    device=recipe.pretrain.device)


def compare(ctx: Context) -> None:
    """`fournil eval --model A --model B --task T --report DIR`: every model on every task
    (default: the recipe's [eval] tasks, else what the run has), a table on stdout and, with
    --report, report.md with plots."""
    recipe, run_dir = ctx.recipe, ctx.folder("pretrain").parent
    models = ([ctx.option("model")] if ctx.option("model") else []) + ctx.option("models", [])
    if not models:
        export = ctx.folder("export")
        models = [str(export if (export / "model.safetensors").exists()
                      else final_checkpoint(ctx.folder("pretrain")))]
    tasks = select_tasks(recipe.eval, run_dir, ctx.option("task", []), recipe.resolve)
    if not tasks:
        raise RecipeError(f"{run_dir}: nothing to evaluate on (no tokens/curate stages, no "
                          "synth eval samples); pass --task, e.g. --task mc:items.jsonl")
    report = ctx.option("report")
    # with a report folder, long tasks (OCR) record their answers there and resume from them
    settings = settings_for(recipe.eval, run_dir, recipe.pretrain.seq_len,
                            ctx.option("max_items"),
                            journal_dir=Path(report) / "journal" if report else None)
    results = evaluate(models, tasks, settings, device=recipe.pretrain.device)
    print(format_table(results))
    if ctx.option("report"):
        print(f"report: {write_report(results, ctx.option('report'))}")


def score_gguf(ctx: Context) -> None:
    """`fournil eval --gguf FILE`: the bpb of GGUF files under llama.cpp next to the
    full-precision model's, on the same held-out windows. Writes nothing: the eval stage's
    output stays that of the model it was run on."""
    recipe = ctx.recipe
    ggufs = [Path(p) for p in ctx.option("gguf")]
    for path in ggufs:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
    # the model the files were exported from: by default their folder, when it holds one
    model_dir = Path(ctx.option("model") or ggufs[0].parent)
    if not ctx.option("model") and not (model_dir / "model.safetensors").exists():
        model_dir = final_checkpoint(ctx.folder("pretrain"))
    rows = gguf_bpb(model_dir, ggufs, ctx.folder("tokens", "tokens"), recipe.pretrain.seq_len,
                    recipe.pretrain.eval_tokens)
    print(f"held-out bits-per-byte, {rows[0]['result']['tokens']:,} tokens, "
          f"{rows[0]['result']['bytes']:,} bytes")
    print(format_gguf_table(rows))


def model_fingerprint(model_dir: Path) -> str:
    return hash_files([p for p in Path(model_dir).iterdir()
                       if p.name in ("model.safetensors", "config.json", "tokenizer.json")])


def run_eval(model_dir: Path, tokens_dir: Path, out_dir: Path, seq_len: int,
             max_tokens_per_source: int, batch_size: int = 8, device: str = "auto",
             curate_dir: Path | None = None) -> EvalManifest:
    """The manifest's `bpb` has `by_source`, and `by_language` when `curate_dir` is given
    (each language capped at `max_tokens_per_source` too)."""
    inputs = {"model": model_fingerprint(model_dir), "tokens": upstream_hash(tokens_dir)}
    if curate_dir is not None:
        inputs["curate"] = upstream_hash(curate_dir)
    stage = Stage("eval", out_dir, inputs=inputs,
                  params={"seq_len": seq_len, "max_tokens_per_source": max_tokens_per_source,
                          "model_dir": str(model_dir)})
    if manifest := stage.done():
        return manifest
    stage.start()
    torch_device = pick_device(device)
    model = Transformer.load(model_dir, device=torch_device)
    token_bytes = token_byte_lengths(load_tokenizer(model_dir))
    held_out = HeldOut(Path(tokens_dir) / "val", max_tokens_per_source)
    result = bits_per_byte(model, held_out, token_bytes, seq_len, batch_size, torch_device,
                           autocast_for(torch_device))
    if curate_dir is not None:
        by_language = HeldOut(Path(tokens_dir) / "val", max_tokens_per_source,
                              group_of=document_languages(curate_dir))
        result["by_language"] = bits_per_byte(model, by_language, token_bytes, seq_len,
                                              batch_size, torch_device,
                                              autocast_for(torch_device))["by_source"]
    return stage.finish({"val_bpb": result["bpb"], "val_loss": result["loss"],
                         "tokens": result["tokens"], "bytes": result["bytes"]},
                        bpb=result)
