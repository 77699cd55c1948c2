"""Decode speed: fournil's PyTorch `generate` against llama.cpp on the GGUF export of the same
model, in one run.

    pip install -e '.[llama]'                # llama-cpp-python (pip compiles llama.cpp)
    python bench/decode_bench.py             # the default recipe's model if baked, ~1 minute
    python bench/decode_bench.py --model runs/tiny-cpu/export --new-tokens 400 --repeats 7

The model is `runs/tiny-cpu/export` when it exists (`fournil bake` makes it), else the smoke
recipe baked into a temporary folder. It is exported to GGUF (f32, f16, q8_0, q4_0) in a
temporary folder, then each engine continues the same prompt greedily for the same number of
new tokens, stop tokens ignored: fournil's `iter_tokens` (KV cache, float32) and
llama-cpp-python's `Llama.generate` (temperature 0: llama.cpp's greedy sampler), with the same
number of threads (`--threads`, default 1). Runs are interleaved (fournil, then each GGUF,
`--repeats` times) so load from other work on the machine hits every engine alike, and the
median is reported.

Prefill is the time to the first new token; decode tokens/s counts the tokens after it, so
the prompt's length does not blur the per-token rate. The table also says whether each
engine's greedy tokens equal fournil's.

The headline is the like-for-like row: llama.cpp on the f32 GGUF against fournil's float32
PyTorch, the same weights in the same precision on the same threads, so the ratio is the
engines' alone. The f16, q8_0 and q4_0 rows read fewer bytes per token at some cost in
precision; they show what the export buys beyond that, not how the engines compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from fournil.export.gguf import export_gguf  # noqa: E402
from fournil.model.generate import iter_tokens, load_for_generation  # noqa: E402

DTYPES = ("f32", "f16", "q8_0", "q4_0")  # f32 first: the like-for-like row
OURS = "fournil generate (PyTorch, float32)"


def label(dtype: str, path: Path) -> str:
    return f"llama.cpp, {dtype} GGUF ({path.stat().st_size / 1e6:.1f} MB)"


def default_model(work: Path) -> Path:
    export = ROOT / "runs" / "tiny-cpu" / "export"
    if (export / "model.safetensors").exists():
        return export
    from fournil.bake import bake
    from fournil.recipe import load_recipe

    print("runs/tiny-cpu/export not found: baking the smoke recipe (small model)")
    return Path(bake(load_recipe(ROOT / "recipes" / "smoke.toml"), work / "smoke")["export"])


def timed(tokens: Iterator[int], n: int) -> tuple[list[int], float, float]:
    """(tokens, seconds to the first token, seconds for the n - 1 after it)."""
    start = time.perf_counter()
    out, first = [], 0.0
    for token in tokens:
        out.append(token)
        if len(out) == 1:
            first = time.perf_counter()
        if len(out) == n:
            break
    return out, first - start, time.perf_counter() - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="export or checkpoint folder")
    parser.add_argument("--prompt", default="Il était une fois, dans un petit village,")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for each engine (default 1: llama.cpp's workers spin "
                        "while waiting, so on a busy machine more threads can be slower)")
    args = parser.parse_args()

    try:
        import llama_cpp
    except ImportError:
        sys.exit("decode_bench: llama-cpp-python is not installed; pip install -e '.[llama]' "
                 "(pip compiles llama.cpp: 10-25 minutes on 2 cores)")

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="decode-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model or default_model(work)
        model, tokenizer = load_for_generation(model_dir)
        prompt = tokenizer.encode(args.prompt).ids
        n = min(args.new_tokens, model.config.max_seq_len - len(prompt))
        ggufs = {d: export_gguf(model_dir, work / f"model-{d}.gguf", d) for d in DTYPES}
        llms = {d: llama_cpp.Llama(model_path=str(p), n_ctx=model.config.max_seq_len,
                                   n_threads=args.threads, n_threads_batch=args.threads,
                                   verbose=False) for d, p in ggufs.items()}

        def run_fournil() -> tuple[list[int], float, float]:
            return timed(iter_tokens(model, prompt, n, temperature=0), n)

        def run_llama(dtype: str) -> tuple[list[int], float, float]:
            llm = llms[dtype]
            llm.reset()  # no prompt reuse from the previous run: prefill every time
            return timed(llm.generate(prompt, temp=0.0, repeat_penalty=1.0), n)

        engines = {OURS: run_fournil}
        labels = {d: label(d, ggufs[d]) for d in DTYPES}  # while the files exist
        engines |= {labels[d]: (lambda d=d: run_llama(d)) for d in DTYPES}
        for run in engines.values():  # warm-up: first-call allocations, page faults
            run()
        load_before = os.getloadavg()
        results: dict[str, list[tuple[list[int], float, float]]] = {e: [] for e in engines}
        for _ in range(args.repeats):
            for name, run in engines.items():
                results[name].append(run())
        load_after = os.getloadavg()

    print(f"model: {model_dir} ({model.num_parameters():,} parameters, "
          f"{model.config.num_layers} layers, hidden {model.config.hidden_size}, "
          f"vocab {model.config.vocab_size})")
    print(f"prompt: {len(prompt)} tokens, {n} new tokens, greedy, {args.threads} thread(s) "
          f"each, median of {args.repeats} interleaved runs; torch {torch.__version__}, "
          f"llama-cpp-python {llama_cpp.__version__}")
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
          f"on {os.cpu_count()} cores (other work on the machine slows every engine)")
    print()
    reference = results[OURS][0][0]
    rows = {}
    for name, runs in results.items():
        pairs = enumerate(zip(runs[0][0], reference, strict=True))
        rows[name] = (statistics.median(r[1] for r in runs) * 1e3,
                      statistics.median((n - 1) / r[2] for r in runs),
                      next((f"no, from token {i}" for i, (a, b) in pairs if a != b), "yes"))
    base_rate = rows[OURS][1]
    header = (f"{'engine':<40} {'prefill ms':>10} {'decode tok/s':>12} {'vs fournil':>10}  "
              f"same tokens")
    print(header)
    for name, (prefill, rate, same) in rows.items():
        if name == OURS:
            print("like for like: the same weights, float32 " + "-" * (len(header) - 41))
        if name == labels[DTYPES[1]]:
            print("quantised: fewer bytes per token, less precision " + "-" * (len(header) - 50))
        print(f"{name:<40} {prefill:10.1f} {rate:12.1f} {rate / base_rate:9.1f}x  {same}")

    _, rate, same = rows[labels["f32"]]
    ratio = rate / base_rate
    print(f"\nlike for like (the same weights in float32, {args.threads} thread(s) each): "
          f"llama.cpp decodes {rate:.0f} tok/s, fournil {base_rate:.0f}: {ratio:.1f}x "
          f"(target >= 3x: {'met' if ratio >= 3 else 'missed'}); same greedy tokens: {same}")
    fastest = max(DTYPES[1:], key=lambda d: rows[labels[d]][1])
    print(f"quantised, not like for like: up to {rows[labels[fastest]][1] / base_rate:.1f}x "
          f"({fastest}), from reading fewer bytes per token")


if __name__ == "__main__":
    main()
