"""The `fournil` command: one verb per stage, and `bake` to run a whole recipe.

Every stage verb reads the recipe (default `recipes/tiny-cpu.toml`) for its parameters and
the run folder for its inputs; `--set key=value` overrides any recipe value, and `--input` /
`--out` point a stage at other folders.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from fournil import __version__
from fournil.core.layout import RunLayout
from fournil.recipe import (
    Recipe,
    RecipeError,
    SourceSpec,
    load_recipe,
    recipe_from_dict,
    tomllib,
)

DEFAULT_RECIPE = Path("recipes/tiny-cpu.toml")


def parse_override(item: str) -> tuple[list[str], object]:
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected key=value, e.g. pretrain.max_steps=100")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return key.strip().split("."), value


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    if not overrides:
        return recipe
    data = recipe.to_dict()
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise RecipeError(f"--set {item}: no section {k!r} in the recipe")
            node = node[k]
        node[keys[-1]] = value
    return recipe_from_dict(data, recipe.file)


def get_recipe(args: argparse.Namespace) -> Recipe:
    path = Path(args.recipe) if args.recipe else DEFAULT_RECIPE
    if not path.exists() and args.recipe is None:
        raise RecipeError(f"{path}: default recipe not found; run from the fournil checkout "
                          "or pass a recipe")
    return apply_overrides(load_recipe(path), args.set or [])


def get_layout(args: argparse.Namespace, recipe: Recipe) -> RunLayout:
    return RunLayout(recipe.run_dir(args.run_dir))


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


# --- verbs ----------------------------------------------------------------------------------

def cmd_ingest(args: argparse.Namespace) -> None:
    from fournil.ingest.stage import run_ingest
    recipe = get_recipe(args)
    if args.paths:
        sources = [SourceSpec(path=str(Path(p).resolve()), name=args.name, license=args.license,
                              format=args.format, language=args.language,
                              text_field=args.text_field, encoding=args.encoding)
                   for p in args.paths]
    else:
        sources = recipe.ingest.sources
    out = Path(args.out) if args.out else get_layout(args, recipe).ingest
    _print_json(run_ingest(sources, out, recipe.resolve, recipe.ingest.rows_per_shard,
                           strict=args.strict or recipe.ingest.strict)["counts"])


def cmd_curate(args: argparse.Namespace) -> None:
    from fournil.curate.stage import run_curate
    recipe = get_recipe(args)
    layout = get_layout(args, recipe)
    config = recipe.curate
    for name in ("executor", "workers", "ray_address"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    config.validate("curate")
    out = Path(args.out) if args.out else layout.curate
    manifest = run_curate(Path(args.input) if args.input else layout.ingest, out, config,
                          recipe.ingest.rows_per_shard)
    counts = manifest["counts"]
    _print_json({k: counts[k] for k in ("read", "kept", "rejected", "pii", "ocr_flagged")})
    print(f"report: {out / 'report.md'}")


def cmd_synth(args: argparse.Namespace) -> None:
    from fournil.synth.stage import run_synth
    recipe = get_recipe(args)
    layout = get_layout(args, recipe)
    config = recipe.synth
    if args.executor is not None:
        config.executor = args.executor
    config.validate("synth")
    out = Path(args.out) if args.out else layout.synth
    manifest = run_synth(Path(args.input) if args.input else layout.curate, out, config,
                         recipe.seed, recipe.curate.allowed_licenses)
    counts = manifest["counts"]
    _print_json({task: {k: c[k] for k in ("generated", "kept", "rejected", "by_split")}
                 for task, c in counts["tasks"].items()})
    print(f"report: {out / 'report.md'}")


def cmd_tokenizer(args: argparse.Namespace) -> None:
    from fournil.tokenizer.stage import run_tokenizer
    recipe = get_recipe(args)
    layout = get_layout(args, recipe)
    manifest = run_tokenizer(Path(args.input) if args.input else layout.curate,
                             Path(args.out) if args.out else layout.tokenizer,
                             recipe.tokenizer, recipe.model.max_seq_len)
    _print_json(manifest["counts"])


def cmd_tokenize(args: argparse.Namespace) -> None:
    from fournil.tokens.stage import run_tokenize
    recipe = get_recipe(args)
    layout = get_layout(args, recipe)
    manifest = run_tokenize(Path(args.input) if args.input else layout.curate,
                            Path(args.tokenizer) if args.tokenizer else layout.tokenizer,
                            Path(args.out) if args.out else layout.tokens, recipe.tokenize,
                            synth_dir=layout.synth)
    _print_json({split: {k: v for k, v in c.items() if k in ("docs", "tokens")}
                 for split, c in manifest["counts"].items()})


def cmd_pretrain(args: argparse.Namespace) -> None:
    from fournil.pretrain.stage import run_pretrain
    recipe = get_recipe(args)
    layout = get_layout(args, recipe)
    out = Path(args.out) if args.out else layout.pretrain
    manifest = run_pretrain(Path(args.tokens) if args.tokens else layout.tokens,
                            Path(args.tokenizer) if args.tokenizer else layout.tokenizer,
                            out, recipe.model, recipe.pretrain, recipe.seed,
                            stop_after=args.stop_after, teacher_dir=recipe.teacher_dir())
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return
    if manifest is None:
        print(f"stopped after step {args.stop_after}; run the same command again to continue")
    else:
        _print_json({**manifest["counts"], "final_checkpoint": str(out / manifest[
            "final_checkpoint"])})


def _post_train(args: argparse.Namespace, stage: str) -> None:
    """`fournil sft` / `fournil dpo`: the same inputs, outputs and report, another trainer."""
    from fournil.bake import post_inputs
    from fournil.dpo.stage import run_dpo
    from fournil.sft.stage import run_sft
    recipe = get_recipe(args)
    layout = get_layout(args, recipe)
    data, base = post_inputs(recipe, layout, stage, [Path(p) for p in args.data or []],
                             Path(args.base) if args.base else None)
    out = Path(args.out) if args.out else getattr(layout, stage)
    run = run_sft if stage == "sft" else run_dpo
    manifest = run(data, base, out, getattr(recipe, stage), recipe.seed,
                   stop_after=args.stop_after)
    if manifest is None:
        print(f"stopped after step {args.stop_after}; run the same command again to continue")
        return
    rejected = (manifest["selection"] if stage == "sft" else manifest)["rejected_by_reason"]
    _print_json({**manifest["counts"], "rejected_by_reason": rejected,
                 "final_checkpoint": str(out / manifest["final_checkpoint"])})


def cmd_sft(args: argparse.Namespace) -> None:
    _post_train(args, "sft")


def cmd_dpo(args: argparse.Namespace) -> None:
    _post_train(args, "dpo")


def cmd_eval(args: argparse.Namespace) -> None:
    from fournil.eval.stage import run_eval
    from fournil.pretrain.stage import final_checkpoint
    recipe = get_recipe(args)
    layout = get_layout(args, recipe)
    if args.gguf:
        _eval_gguf(args, recipe, layout)
        return
    if args.task or args.report or args.models:
        _eval_tasks(args, recipe, layout)
        return
    model_dir = Path(args.model) if args.model else final_checkpoint(layout.pretrain)
    manifest = run_eval(model_dir, Path(args.tokens) if args.tokens else layout.tokens,
                        Path(args.out) if args.out else layout.eval, recipe.pretrain.seq_len,
                        recipe.pretrain.eval_tokens, device=recipe.pretrain.device)
    bpb = manifest["bpb"]
    _print_json({"model": str(model_dir), "val_bpb": bpb["bpb"], "val_loss": bpb["loss"],
                 "tokens": bpb["tokens"],
                 "by_source": {s: round(r["bpb"], 4) for s, r in bpb["by_source"].items()}})


def _eval_tasks(args: argparse.Namespace, recipe: Recipe, layout: RunLayout) -> None:
    """`fournil eval --model A --model B --task T --report DIR`: every model on every task
    (default: the recipe's [eval] tasks, else what the run has: bpb, copy, synth ocr, rag), a
    table on stdout and, with --report, report.md with plots."""
    from fournil.eval.tasks import EvalSettings, default_tasks, evaluate, parse_task
    from fournil.pretrain.stage import final_checkpoint
    from fournil.report.markdown import format_table, write_report
    models = ([args.model] if args.model else []) + (args.models or [])
    if not models:
        export = layout.export
        models = [str(export if (export / "model.safetensors").exists()
                      else final_checkpoint(layout.pretrain))]
    config = recipe.eval
    if args.task:
        tasks = [parse_task(t) for t in args.task]
    elif config.tasks:
        tasks = [parse_task(t, recipe.resolve) for t in config.tasks]
    else:
        tasks = default_tasks(layout.root)
    if not tasks:
        raise RecipeError(f"{layout.root}: nothing to evaluate on (no tokens/curate stages, no "
                          "synth eval samples); pass --task, e.g. --task mc:items.jsonl")
    settings = EvalSettings(run_dir=layout.root, seq_len=recipe.pretrain.seq_len,
                            bpb_bytes_per_source=config.bpb_bytes_per_source,
                            max_items=args.max_items or config.max_items,
                            max_new_tokens=config.max_new_tokens)
    results = evaluate(models, tasks, settings, device=recipe.pretrain.device)
    print(format_table(results))
    if args.report:
        print(f"report: {write_report(results, args.report)}")


def _eval_gguf(args: argparse.Namespace, recipe: Recipe, layout: RunLayout) -> None:
    """`fournil eval --gguf FILE`: the bpb of GGUF files under llama.cpp next to the
    full-precision model's, on the same held-out windows. Writes nothing: the eval stage's
    output stays that of the model it was run on."""
    from fournil.eval.gguf_bpb import format_table, gguf_bpb
    from fournil.pretrain.stage import final_checkpoint
    ggufs = [Path(p) for p in args.gguf]
    for path in ggufs:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
    # the model the files were exported from: by default their folder, when it holds one
    model_dir = Path(args.model) if args.model else ggufs[0].parent
    if not args.model and not (model_dir / "model.safetensors").exists():
        model_dir = final_checkpoint(layout.pretrain)
    rows = gguf_bpb(model_dir, ggufs, Path(args.tokens) if args.tokens else layout.tokens,
                    recipe.pretrain.seq_len, recipe.pretrain.eval_tokens)
    print(f"held-out bits-per-byte, {rows[0]['result']['tokens']:,} tokens, "
          f"{rows[0]['result']['bytes']:,} bytes")
    print(format_table(rows))


def cmd_export(args: argparse.Namespace) -> None:
    from fournil.export.gguf import export_gguf, gguf_path, parse_dtypes
    from fournil.export.stage import run_export
    recipe = get_recipe(args)
    layout = get_layout(args, recipe)
    dtypes = parse_dtypes(args.gguf or [])  # checked before the export runs
    manifest = run_export(recipe, layout, Path(args.out) if args.out else None)
    out = Path(args.out) if args.out else layout.export
    print(f"exported {manifest['counts']['parameters']:,} parameters to {out}")
    for dtype in dtypes:  # next to the HF files, from them
        path = export_gguf(out, gguf_path(out, dtype), dtype, name=recipe.name)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def cmd_generate(args: argparse.Namespace) -> None:
    from fournil.model.generate import generate_text, load_for_generation
    recipe = get_recipe(args)
    model_dir = Path(args.model) if args.model else get_layout(args, recipe).export
    if not (model_dir / "model.safetensors").exists():
        raise RecipeError(f"{model_dir}: no model here; bake or export first, or pass --model")
    model, tokenizer = load_for_generation(model_dir)
    g = recipe.generate
    text = generate_text(
        model, tokenizer, args.prompt,
        max_new_tokens=args.max_new_tokens or g.max_new_tokens,
        temperature=g.temperature if args.temperature is None else args.temperature,
        top_k=g.top_k if args.top_k is None else args.top_k,
        top_p=g.top_p if args.top_p is None else args.top_p,
        seed=g.seed if args.seed is None else args.seed)
    print(args.prompt + text)


def _served_model_dir(args: argparse.Namespace) -> Path:
    """MODEL_DIR, else the export of the recipe's run (the default recipe's by default)."""
    model_dir = Path(args.model_dir) if args.model_dir else get_layout(
        args, get_recipe(args)).export
    if not (model_dir / "model.safetensors").exists():
        raise RecipeError(f"{model_dir}: no model here; bake or export first, or pass "
                          "MODEL_DIR")
    return model_dir


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        from fournil.serve.server import serve
    except ImportError as e:  # starlette / uvicorn are the `serve` extra
        raise RecipeError(f"fournil serve needs the serve extra ({e.name} is missing): "
                          "pip install 'fournil[serve]'") from e
    if args.model:  # any model: ours, another transformers folder, or a .gguf file
        model = Path(args.model)
        if not model.exists():
            raise RecipeError(f"{model}: no such model folder or .gguf file")
        if args.model_dir:
            raise RecipeError("give the model either as MODEL_DIR or with --model, not both")
    else:
        model = _served_model_dir(args)
    serve(model, host=args.host, port=args.port,
          max_concurrency=args.max_concurrency, max_queue=args.max_queue,
          model_name=args.model_name, device=args.device, threads=args.threads,
          max_body_bytes=args.max_body_bytes, body_timeout_s=args.body_timeout)


def cmd_chat(args: argparse.Namespace) -> None:
    from fournil.serve.chat import chat_loop
    from fournil.serve.engine import Sampling, load_served
    served = load_served(_served_model_dir(args), None, args.device)
    d = served.defaults
    sampling = Sampling(
        max_tokens=args.max_new_tokens or d["max_new_tokens"],
        temperature=d["temperature"] if args.temperature is None else args.temperature,
        top_k=d["top_k"] if args.top_k is None else args.top_k,
        top_p=d["top_p"] if args.top_p is None else args.top_p, seed=args.seed)
    chat_loop(served, sampling, system=args.system)


def cmd_bake(args: argparse.Namespace) -> None:
    from fournil.bake import bake
    recipe = get_recipe(args)
    summary = bake(recipe, args.run_dir)
    print()
    print(f"model:       {summary['export']}")
    print(f"val bpb:     {summary['val_bpb']:.4f}  "
          + "  ".join(f"{s}={b:.3f}" for s, b in summary["val_bpb_by_source"].items()))
    print(f"sample:      {summary['prompt']}{summary['sample']}")
    print(f"total time:  {summary['seconds']:.0f}s")


# --- parser ---------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser, recipe_positional: bool = False) -> None:
    if recipe_positional:
        p.add_argument("recipe", nargs="?", help=f"recipe TOML (default {DEFAULT_RECIPE})")
    else:
        p.add_argument("-r", "--recipe", help=f"recipe TOML (default {DEFAULT_RECIPE})")
    p.add_argument("--run-dir", help="run folder (default: the recipe's out_dir or runs/<name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set pretrain.max_steps=100 (repeatable)")


def _post_args(p: argparse.ArgumentParser, verb: str, data: str, base: str) -> None:
    p.add_argument("--data", action="append", metavar="PATH",
                   help=f"files or folders of training data (repeatable; default {data})")
    p.add_argument("--base", help=f"checkpoint or export folder to start from (default {base})")
    p.add_argument("--out", help=f"output folder (default <run>/{verb})")
    p.add_argument("--stop-after", type=int, metavar="STEP",
                   help="checkpoint and exit after this step; the same command continues")
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fournil",
        description="Bake small language models from open, provenance-checked data. "
                    "`fournil bake` runs a whole recipe; each stage is also a verb.")
    parser.add_argument("--version", action="version", version=f"fournil {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = sub.add_parser("bake", help="run a recipe through every stage, raw documents to export",
                       description="Run ingest, curate, tokenizer, tokenize, pretrain, eval and "
                       "export. Stages that are up to date are skipped; a killed bake resumes.")
    _common(p, recipe_positional=True)
    p.set_defaults(func=cmd_bake)

    p = sub.add_parser("ingest", help="read raw documents into Parquet shards with provenance",
                       description="Read JSONL (.gz/.zst), JSON, Parquet or folders of .txt/.md "
                       "into document shards; licenses are normalised to SPDX ids. Without "
                       "PATHs the recipe's sources are read. A damaged file (truncated, "
                       "corrupt, unreadable) is rejected with its reason and the run goes on.")
    p.add_argument("paths", nargs="*", help="files or folders to ingest instead of the recipe's")
    p.add_argument("--name", help="source name for PATHs (else the folder's source.toml)")
    p.add_argument("--license", help="license of PATHs, raw or SPDX (else source.toml)")
    p.add_argument("--format", help="auto, jsonl, json, parquet or txt (default: auto)")
    p.add_argument("--language", help="ISO 639-1 code of PATHs")
    p.add_argument("--text-field", help="JSON/Parquet field with the text (default: text)")
    p.add_argument("--encoding", help="encoding of the text and HTML files of PATHs, e.g. "
                   "cp1252 (default: BOM, UTF-8, else detected)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first damaged file (truncated, corrupt, unreadable, "
                   "empty) instead of rejecting it and going on (recipe: ingest.strict)")
    p.add_argument("--out", help="output folder (default <run>/ingest)")
    _common(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("curate", help="license gate, PII scrub, language ID, quality filters, "
                       "exact and near-duplicate removal",
                       description="Filter ingested documents: license gate, Unicode "
                       "normalisation, PII scrubbing, language ID, Gopher/C4/FineWeb quality "
                       "rules, OCR-noise flag, exact and MinHash dedup. Rejected documents go "
                       "to rejected/ with a reason; the manifest's counts add up; report.md "
                       "shows counts per source and examples of each rejection reason.")
    p.add_argument("--input", help="ingest folder (default <run>/ingest)")
    p.add_argument("--out", help="output folder (default <run>/curate)")
    p.add_argument("--executor", choices=["local", "ray"],
                   help="where tasks run: local processes (default) or Ray")
    p.add_argument("--workers", type=int,
                   help="local worker processes (0 = all cores; Ray: CPUs of a local cluster)")
    p.add_argument("--ray-address", dest="ray_address",
                   help="Ray cluster to join (e.g. auto or host:6379); default: start a local one")
    _common(p)
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("synth", help="synthetic samples grounded in curated documents: OCR "
                       "correction, cited RAG, QA, summaries; verified, with provenance",
                       description="Make synthetic training samples from seed passages of the "
                       "curated documents, under varied constraints (the recipe's [synth] "
                       "axes), with the programmatic generators or an LLM ([synth.generator]). "
                       "Each sample is verified; failures go to rejected/ with a reason. "
                       "report.md shows counts, acceptance per check and diversity figures "
                       "(naive vs controlled generation with synth.compare_naive).")
    p.add_argument("--input", help="curate folder (default <run>/curate)")
    p.add_argument("--out", help="output folder (default <run>/synth)")
    p.add_argument("--executor", choices=["local", "ray"],
                   help="where chunks run: this process (default) or Ray tasks")
    _common(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on curated text")
    p.add_argument("--input", help="curate folder (default <run>/curate)")
    p.add_argument("--out", help="output folder (default <run>/tokenizer)")
    _common(p)
    p.set_defaults(func=cmd_tokenizer)

    p = sub.add_parser("tokenize", help="pack curated documents into train/val token shards")
    p.add_argument("--input", help="curate folder (default <run>/curate)")
    p.add_argument("--tokenizer", help="tokenizer folder (default <run>/tokenizer)")
    p.add_argument("--out", help="output folder (default <run>/tokens)")
    _common(p)
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("pretrain", help="train the model on token shards (resumable)",
                       description="Pretrain from scratch, or continue from the latest "
                       "checkpoint in the output folder.")
    p.add_argument("--tokens", help="tokens folder (default <run>/tokens)")
    p.add_argument("--tokenizer", help="tokenizer folder (default <run>/tokenizer)")
    p.add_argument("--out", help="output folder (default <run>/pretrain)")
    p.add_argument("--stop-after", type=int, metavar="STEP",
                   help="checkpoint and exit after this step; the same command continues")
    _common(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("sft", help="supervised fine-tuning on chats, full or LoRA",
                       description="Fine-tune on chats (synth samples, or JSONL/Parquet with a "
                       "messages column), the loss on assistant tokens only, several chats "
                       "packed per row. Chats are selected first (format, length, citations; "
                       "the rejected ones in rejected.parquet with their reason). With "
                       "sft.lora.rank > 0, LoRA adapters are trained and the checkpoint holds "
                       "the merged weights (pip install 'fournil[lora]').")
    _post_args(p, "sft", "sft.data, else <run>/synth", "the final pretrain checkpoint")
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("dpo", help="direct preference optimisation on preference pairs",
                       description="Preference-tune with the sigmoid DPO loss against the "
                       "frozen base model. Pairs are JSONL/Parquet rows with prompt (text or "
                       "messages), chosen and rejected.")
    _post_args(p, "dpo", "dpo.data", "the final sft checkpoint, else pretrain's")
    p.set_defaults(func=cmd_dpo)

    p = sub.add_parser("eval", help="held-out bits-per-byte, task scores, comparison reports",
                       description="Without --model/--task/--report: the eval stage, held-out "
                       "bits-per-byte of MODEL per source. With them: every model (a fournil "
                       "checkpoint or export, or any Hugging Face causal LM folder) on every "
                       "task, a table, and with --report a markdown report with plots. See "
                       "docs/evaluation.md.")
    p.add_argument("model", nargs="?", help="checkpoint or export folder (default: final "
                   "pretrain checkpoint)")
    p.add_argument("--model", dest="models", action="append", metavar="[LABEL=][hf:]PATH",
                   help="a model to compare (repeatable); hf: runs a fournil folder through "
                   "transformers")
    p.add_argument("--task", action="append", metavar="TASK",
                   help="bpb, mc:FILE.jsonl, ocr[:PATH], rag[:PATH], copy[:PATH] (repeatable; "
                   "default: the recipe's [eval] tasks, else bpb, copy and the run's synth "
                   "ocr/rag eval samples)")
    p.add_argument("--report", metavar="DIR", help="write DIR/report.md, results.json, plots")
    p.add_argument("--max-items", type=int, help="items per task (default: eval.max_items)")
    p.add_argument("--tokens", help="tokens folder (default <run>/tokens)")
    p.add_argument("--out", help="output folder (default <run>/eval)")
    p.add_argument("--gguf", action="append", metavar="FILE",
                   help="also score this GGUF file with llama.cpp and print its bpb next to "
                   "the full-precision model's (the file's folder, or MODEL); repeatable")
    _common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="write a Hugging Face model folder with a model card",
                       description="Write the HF folder (config, safetensors, tokenizer, chat "
                       "template, model card) and, with --gguf, GGUF files for llama.cpp next "
                       "to it (model-<type>.gguf).")
    p.add_argument("--out", help="output folder (default <run>/export)")
    p.add_argument("--gguf", action="append", metavar="TYPES",
                   help="also write GGUF files: f32, f16, q8_0 and/or q4_0, comma-separated "
                   "or repeated (k-quants: run llama.cpp's llama-quantize on the f16 file)")
    _common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("generate", help="sample a continuation of a prompt")
    p.add_argument("prompt", help="text to continue")
    p.add_argument("--model", help="checkpoint or export folder (default <run>/export)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float, help="0 is greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    _common(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API",
                       description="/v1/models, /v1/completions and /v1/chat/completions "
                       "(streaming with server-sent events), on 127.0.0.1 unless --host says "
                       "otherwise. At most --max-concurrency generations run at once and "
                       "--max-queue more wait; requests beyond get a 429.")
    p.add_argument("model_dir", nargs="?", metavar="MODEL_DIR",
                   help="export or checkpoint folder (default <run>/export)")
    p.add_argument("--model", metavar="PATH",
                   help="serve this instead: a fournil export, any transformers causal LM "
                   "folder with a chat template, or a .gguf file (loaded by transformers)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes the model "
                   "to the network, without authentication)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--max-concurrency", type=int, default=1,
                   help="generations running at once (default 1)")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests waiting for a generation slot before new ones get a 429 "
                   "(default 16)")
    p.add_argument("--model-name", help="the model id clients use (default: the recipe's "
                   "name from the export manifest, else the folder name)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--threads", type=int, help="CPU threads per generation (default: "
                   "the cores this process may use / max-concurrency)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20,
                   help="larger request bodies get a 413 (default 1048576)")
    p.add_argument("--body-timeout", type=float, default=20.0, metavar="SECONDS",
                   help="a request body not received whole in this time gets a 408 "
                   "(default 20)")
    _common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("chat", help="chat with the model in the terminal",
                       description="An interactive chat through the model's chat template; "
                       "replies stream as they come. /reset forgets the conversation, /exit "
                       "or Ctrl-D leaves, Ctrl-C stops a reply.")
    p.add_argument("model_dir", nargs="?", metavar="MODEL_DIR",
                   help="export or checkpoint folder (default <run>/export)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=int,
                   help="longest reply (default: the export's generation config)")
    p.add_argument("--temperature", type=float, help="0 is greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    _common(p)
    p.set_defaults(func=cmd_chat)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        args.func(args)
    except (RecipeError, FileNotFoundError, ValueError) as e:
        print(f"fournil {args.verb}: error: {e}", file=sys.stderr)
        sys.exit(2)
