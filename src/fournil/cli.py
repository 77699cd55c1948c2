"""The `fournil` command: `bake`, a verb per stage, and the verbs that use a model.

The stage verbs come from `fournil.stages.STAGES`, with their flags: each reads the recipe
(default `recipes/tiny-cpu.toml`), applies `--set key=value` overrides, and calls the stage's
`run(ctx)`, the same function bake calls, with the verb's flags as the context's options. The
other verbs (bake, generate, serve, chat) are below, each with its flags next to it.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fournil import __version__
from fournil.recipe import Recipe, RecipeError, apply_overrides, load_recipe
from fournil.stages import STAGES, Flag, RunLayout, StageContext, StageSpec, flag

DEFAULT_RECIPE = Path("recipes/tiny-cpu.toml")
# the flags every verb has; the rest of a stage verb's flags are its context's options
COMMON = ("recipe", "run_dir", "set", "verb", "func", "quiet", "spec")


def get_recipe(args: argparse.Namespace) -> Recipe:
    path = Path(args.recipe) if args.recipe else DEFAULT_RECIPE
    if not path.exists() and args.recipe is None:
        raise RecipeError(f"{path}: default recipe not found; run from the fournil checkout "
                          "or pass a recipe")
    return apply_overrides(load_recipe(path), args.set or [])


def get_layout(args: argparse.Namespace, recipe: Recipe) -> RunLayout:
    return RunLayout(recipe.run_dir(args.run_dir))


def run_stage(args: argparse.Namespace) -> None:
    """A stage verb: the stage's `run(ctx)`, then its counts on stdout."""
    spec: StageSpec = args.spec
    recipe = get_recipe(args)
    options = {k: v for k, v in vars(args).items() if k not in COMMON}
    manifest = spec.entry()(StageContext(recipe, get_layout(args, recipe), options))
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return
    if manifest is None:
        if options.get("stop_after") is not None:
            unit = "chunk" if spec.name == "correct" else "step"
            print(f"stopped after {unit} {options['stop_after']}; run the same command again "
                  "to continue")
        return
    print(json.dumps(manifest["counts"], indent=2, ensure_ascii=False, default=str))


# --- the verbs that are not stages ----------------------------------------------------------

def bake_verb(args: argparse.Namespace) -> None:
    from fournil.bake import bake  # the whole pipeline: torch and every stage's code
    summary = bake(get_recipe(args), args.run_dir)
    print()
    print(f"model:       {summary['export']}")
    print(f"val bpb:     {summary['val_bpb']:.4f}  "
          + "  ".join(f"{s}={b:.3f}" for s, b in summary["val_bpb_by_source"].items()))
    print(f"sample:      {summary['prompt']}{summary['sample']}")
    if summary["report"]:
        print(f"report:      {summary['report']}")
    print(f"total time:  {summary['seconds']:.0f}s")


def generate_verb(args: argparse.Namespace) -> None:
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


def serve_verb(args: argparse.Namespace) -> None:
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
          max_body_bytes=args.max_body_bytes, body_timeout_s=args.body_timeout,
          index_dir=args.index, passages=args.passages, answer_prefix=args.answer_prefix)


def chat_verb(args: argparse.Namespace) -> None:
    from fournil.serve.chat import chat_loop
    from fournil.serve.engine import Sampling, load_served
    index = None
    if args.index:  # checked before the model is loaded
        from fournil.serve.rag import ServedIndex
        index = ServedIndex(args.index, k=args.k)
        mixed = [name for name, value in (("--system", args.system), ("--temperature",
                 args.temperature), ("--top-k", args.top_k), ("--top-p", args.top_p),
                 ("--seed", args.seed)) if value is not None]
        if mixed:
            raise RecipeError(f"{', '.join(mixed)}: with --index, answers are fournil ask's "
                              "(greedy, in the prompt format of the cited-RAG task)")
    elif args.unconstrained or args.answer_prefix:
        raise RecipeError("--unconstrained and --answer-prefix are for answers from an index: "
                          "add --index DIR")
    served = load_served(_served_model_dir(args), None, args.device)
    ask = None
    if index is not None:  # each message a question, answered by fournil ask's code
        from fournil.index.answer import MAX_NEW_TOKENS
        from fournil.serve.answerer import answer_from_index
        from fournil.serve.rag import Quoting
        ask = functools.partial(
            answer_from_index, served=served, index=index, quoting=Quoting(served.tokenizer),
            max_new_tokens=args.max_new_tokens or MAX_NEW_TOKENS,
            constrained=not args.unconstrained, prefix=args.answer_prefix)
    d = served.defaults
    sampling = Sampling(
        max_tokens=args.max_new_tokens or d["max_new_tokens"],
        temperature=d["temperature"] if args.temperature is None else args.temperature,
        top_k=d["top_k"] if args.top_k is None else args.top_k,
        top_p=d["top_p"] if args.top_p is None else args.top_p, seed=args.seed)
    chat_loop(served, sampling, system=args.system, ask=ask)


def ask_verb(args: argparse.Namespace) -> None:
    """Retrieval first: a question the index has nothing for is refused before any model is
    loaded (in milliseconds, not the seconds a model takes). The answer is the one `fournil
    chat --index` and `POST /v1/ask` give (`fournil.serve.answerer`)."""
    from fournil.index.answer import answer, render_text
    from fournil.serve.rag import ServedIndex
    layout = None if args.index and args.model else get_layout(args, get_recipe(args))
    index = ServedIndex(Path(args.index) if args.index else layout.index, k=args.k)
    model_dir = Path(args.model) if args.model else layout.export
    if not (model_dir / "config.json").is_file() and not (
            model_dir.suffix == ".gguf" and model_dir.is_file()):
        raise RecipeError(f"{model_dir}: no model here; bake or export first, or pass --model "
                          "(a fournil export, any transformers chat model folder or a .gguf)")
    result = answer(args.question, index.retriever, None, k=index.k,
                    min_relevance=index.min_relevance)
    if not result.refused:
        from fournil.serve.answerer import answer_from_index
        from fournil.serve.engine import load_served  # fournil's engine or transformers
        from fournil.serve.rag import Quoting
        served = load_served(model_dir, None, args.device)
        result = answer_from_index(args.question, served, index, Quoting(served.tokenizer),
                                   max_new_tokens=args.max_new_tokens,
                                   constrained=not args.unconstrained,
                                   prefix=args.answer_prefix)
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) if args.json
          else render_text(result))


@dataclass(frozen=True)
class Verb:
    name: str
    func: Callable[[argparse.Namespace], None]
    help: str
    description: str = ""
    flags: tuple[Flag, ...] = ()


_SAMPLING = (flag("--temperature", type=float, help="0 is greedy"), flag("--top-k", type=int),
             flag("--top-p", type=float), flag("--seed", type=int))
_MODEL_DIR = flag("model_dir", nargs="?", metavar="MODEL_DIR",
                  help="export or checkpoint folder (default <run>/export)")
_DEVICE = flag("--device", default="cpu", help="cpu (default), cuda, mps or auto")
# answers from a passage index: fournil ask, chat --index, serve --index
_K = flag("-k", "--k", type=int, default=3, help="passages shown to the model (default 3)")
_UNCONSTRAINED = flag("--unconstrained", action="store_true", help="let quotes be anything "
                      "the model writes (by default they are constrained to be verbatim)")
_ANSWER_PREFIX = flag("--answer-prefix", default="", metavar="TEXT", help="start every answer "
                      "grounded in sources with TEXT, as if the model wrote it: '<ref name=\"' "
                      "makes a model not tuned on cited answers open with a verbatim quote")

BAKE = Verb("bake", bake_verb, "run a recipe through every stage, raw documents to export",
            "Run the recipe's stages in order (" + ", ".join(s.name for s in STAGES) + "; the "
            "optional ones when the recipe's `stages` names them). Stages that are up to date "
            "are skipped; a killed bake resumes.")
MODEL_VERBS = (
    Verb("generate", generate_verb, "sample a continuation of a prompt", flags=(
        flag("prompt", help="text to continue"),
        flag("--model", help="checkpoint or export folder (default <run>/export)"),
        flag("--max-new-tokens", type=int), *_SAMPLING)),
    Verb("serve", serve_verb, "serve the model over an OpenAI-compatible HTTP API",
         "/v1/models, /v1/completions and /v1/chat/completions (streaming with server-sent "
         "events), on 127.0.0.1 unless --host says otherwise. At most --max-concurrency "
         "generations run at once and --max-queue more wait; requests beyond get a 429.",
         flags=(
             _MODEL_DIR,
             flag("--model", metavar="PATH", help="serve this instead: a fournil export, any "
                  "transformers causal LM folder with a chat template, or a .gguf file"),
             flag("--host", default="127.0.0.1", help="address to listen on (default "
                  "127.0.0.1; 0.0.0.0 exposes the model to the network, without "
                  "authentication)"),
             flag("--port", type=int, default=8000, help="default 8000"),
             flag("--max-concurrency", type=int, default=1,
                  help="generations running at once (default 1)"),
             flag("--max-queue", type=int, default=16, help="requests waiting for a "
                  "generation slot before new ones get a 429 (default 16)"),
             flag("--model-name", help="the model id clients use (default: the recipe's name "
                  "from the export manifest, else the folder name)"),
             _DEVICE,
             flag("--threads", type=int, help="CPU threads per generation (default: the cores "
                  "this process may use / max-concurrency)"),
             flag("--max-body-bytes", type=int, default=1 << 20,
                  help="larger request bodies get a 413 (default 1048576)"),
             flag("--body-timeout", type=float, default=20.0, metavar="SECONDS",
                  help="a request body not received whole in this time gets a 408 "
                  "(default 20)"),
             flag("--index", metavar="DIR", help="answer from this passage index (fournil "
                  "index): chat completions retrieve its passages for the last user "
                  "message and quote them verbatim, POST /v1/ask answers a question as "
                  "fournil ask does, and / is a page to ask it from a browser"),
             flag("--passages", type=int, default=3, metavar="N", help="with --index: "
                  "passages shown to the model per question (default 3)"),
             _ANSWER_PREFIX)),
    Verb("chat", chat_verb, "chat with the model in the terminal",
         "An interactive chat through the model's chat template; replies stream as they come. "
         "/reset forgets the conversation, /exit or Ctrl-D leaves, Ctrl-C stops a reply. With "
         "--index, each message is a question answered from the index as fournil ask answers "
         "it, printed with its sources, or refused.",
         flags=(_MODEL_DIR, flag("--system", help="system prompt"),
                flag("--max-new-tokens", type=int,
                     help="longest reply (default: the export's generation config; with "
                     "--index, 256)"),
                *_SAMPLING, _DEVICE,
                flag("--index", metavar="DIR", help="answer each question from this passage "
                     "index (fournil index), citing its sources, as fournil ask does"),
                _K, _UNCONSTRAINED, _ANSWER_PREFIX)),
    Verb("ask", ask_verb, "answer a question from the indexed corpus, citing its sources",
         "Retrieve the passages of the run's index (fournil index) that best match the "
         "question, let the model answer from them in the cited-RAG format it was trained on, "
         "and print the answer with each cited source: title, author, date, license, the "
         "quote and its place in the document. Refuses, saying so, when nothing relevant is "
         "found or the answer cites no passage. An empty question, or one over 1000 "
         "characters, is an error.",
         flags=(flag("question", help="the question, in French"),
                flag("--index", help="index folder (default <run>/index)"),
                flag("--model", help="a fournil export or checkpoint, any transformers chat "
                     "model folder or a .gguf file (default <run>/export)"),
                _K,
                flag("--max-new-tokens", type=int, default=256, help="longest answer "
                     "(default 256)"),
                _UNCONSTRAINED, _ANSWER_PREFIX,
                flag("--json", action="store_true", help="print the answer, its sources and "
                     "the passages as JSON"),
                _DEVICE)),
)


# --- the parser -----------------------------------------------------------------------------

def _add(sub: argparse._SubParsersAction, name: str, help: str, description: str,
         flags: tuple[Flag, ...], recipe_positional: bool = False,
         aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=description or help, aliases=aliases)
    for f in flags:
        p.add_argument(*f.names, **f.options)
    if recipe_positional:
        p.add_argument("recipe", nargs="?", help=f"recipe TOML (default {DEFAULT_RECIPE})")
    else:
        p.add_argument("-r", "--recipe", help=f"recipe TOML (default {DEFAULT_RECIPE})")
    p.add_argument("--run-dir", help="run folder (default: the recipe's out_dir or runs/<name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set pretrain.max_steps=100 (repeatable)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fournil",
        description="Bake small language models from open, provenance-checked data. "
                    "`fournil bake` runs a whole recipe; each stage is also a verb.")
    parser.add_argument("--version", action="version", version=f"fournil {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _add(sub, BAKE.name, BAKE.help, BAKE.description, BAKE.flags,
         recipe_positional=True).set_defaults(func=BAKE.func)
    for spec in STAGES:
        _add(sub, spec.name, spec.help, spec.description, spec.flags,
             aliases=spec.aliases).set_defaults(func=run_stage, spec=spec)
    for verb in MODEL_VERBS:
        _add(sub, verb.name, verb.help, verb.description, verb.flags).set_defaults(
            func=verb.func)
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
