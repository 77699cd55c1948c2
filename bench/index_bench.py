"""The passage index: fournil's default (bm25s + its French analyzer) against tantivy with its
own French chain, and against BM25 without French handling, on the bundled corpus.

    python bench/index_bench.py                 # the default recipe's run; ~1 minute
    python bench/index_bench.py --scale 10      # build and query timings at 10x the passages
    python bench/index_bench.py --windows       # recall and MRR per passage size window

Input: the curated documents of a run (the default recipe's `runs/tiny-cpu`, ingested and
curated first if missing) cut into passages by `fournil.index.passages` (500-1000 chars),
and the hand-written questions of `tests/data/ask-fr.jsonl` (47 answerable; gold = a
passage of the gold document holding the gold text). Every backend indexes title + text.

- fournil: `BM25Retriever` (bm25s 0.3, Lucene BM25 k1 1.2 b 0.75, terms from
  `fournil.index.analyzer`), saved with `fournil.index.store` (its sha256 manifest
  included), opened with `open_index` (which checks every file's sha256);
- tantivy 0.27 (`pip install tantivy==0.27.0`: no dependency, no conflict, so it runs in the
  project's environment; skipped when absent): simple tokenizer, lowercase, French stop words,
  French Snowball stemmer, ASCII folding; queries are a boolean OR of the question's analyzed
  terms (its query parser treats `:`, `(` and `"` as syntax), BM25 k1 1.2 b 0.75;
- naive: bm25s on lowercase `\\w\\w+` words, no stemming, no folding (what French handling
  buys).

Hits are deduplicated the same way for all (`distinct`: the RGAA repeats passages). Build and
query times are CPU seconds of this process (`time.process_time`) next to wall seconds, as
the machine is shared; query latency is over 5 passes of the 59 questions, the first pass
excluded (numpy warm-up).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fournil.bake import run_stages  # noqa: E402
from fournil.core.shards import iter_records  # noqa: E402
from fournil.eval.ask import RANKS, Question, read_questions, retrieval_scores  # noqa: E402
from fournil.index.bm25 import BM25Retriever  # noqa: E402
from fournil.index.passages import (  # noqa: E402
    PROVENANCE,
    Passage,
    document_passages,
    title_and_text,
)
from fournil.index.retriever import Hit, distinct  # noqa: E402
from fournil.index.store import open_index, save_index  # noqa: E402
from fournil.recipe import load_recipe  # noqa: E402
from fournil.stages import RunLayout  # noqa: E402

QUESTIONS = ROOT / "tests" / "data" / "ask-fr.jsonl"


def naive_words(text: str) -> list[str]:
    """Lowercase words of two or more characters: no elision, stemming or folding."""
    return re.findall(r"\b\w\w+\b", text.lower())


class NaiveBM25(BM25Retriever):
    """The default's code (bm25s, the same scoring and selection) over naive words."""

    name = "bm25s, naive words"
    analyzer = staticmethod(naive_words)

    def build(self, passages: Sequence[Passage], folder: Path) -> None:
        super().build(passages)
        self.save(folder)

    def open(self, folder: Path) -> None:
        opened = BM25Retriever.load(folder, self.passages)
        self.bm25, self.vocab = opened.bm25, opened.vocab


class Fournil:
    """The default, through the same save and open (manifest, sha256 checks) as the stage."""

    name = f"fournil: bm25s {version('bm25s')} + French analyzer"

    def build(self, passages: Sequence[Passage], folder: Path) -> None:
        retriever = BM25Retriever()
        retriever.build(passages)
        save_index(retriever, folder)

    def open(self, folder: Path) -> None:
        self.retriever = open_index(folder)

    def search(self, query: str, k: int) -> list[Hit]:
        return self.retriever.search(query, k)


class Tantivy:
    """tantivy with its own French chain; the analyzer is not stored in the index, so it is
    registered again after every open (forgetting it returns arbitrary hits, all scored 1)."""

    def __init__(self) -> None:
        self.name = f"tantivy {version('tantivy')}, its French chain"

    def _analyzer(self):
        import tantivy
        return (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
                .filter(tantivy.Filter.remove_long(40)).filter(tantivy.Filter.lowercase())
                .filter(tantivy.Filter.stopword("french"))
                .filter(tantivy.Filter.stemmer("french")).filter(tantivy.Filter.ascii_fold())
                .build())

    def build(self, passages: Sequence[Passage], folder: Path) -> None:
        import tantivy
        self.passages = passages
        schema = tantivy.SchemaBuilder()
        schema.add_integer_field("row", stored=True, indexed=False, fast=True)
        schema.add_text_field("text", stored=False, tokenizer_name="fr")
        folder.mkdir(parents=True, exist_ok=True)
        index = tantivy.Index(schema.build(), path=str(folder))
        index.register_tokenizer("fr", self._analyzer())
        writer = index.writer(heap_size=64_000_000, num_threads=1)
        for i, p in enumerate(passages):
            writer.add_document(tantivy.Document(row=i, text=title_and_text(p)))
        writer.commit()
        writer.wait_merging_threads()

    def open(self, folder: Path) -> None:
        import tantivy
        self.index = tantivy.Index.open(str(folder))
        self.index.register_tokenizer("fr", self._analyzer())
        self.searcher = self.index.searcher()
        self.analyzer = self._analyzer()
        self.schema = self.index.schema

    def search(self, query: str, k: int) -> list[Hit]:
        import tantivy
        terms = self.analyzer.analyze(query)
        if not terms:
            return []
        q = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "text", t))
             for t in terms])
        found = self.searcher.search(q, limit=k * 4).hits
        rows = [(self.searcher.doc(address)["row"][0], score) for score, address in found]
        return distinct(rows, self.passages, k)


def curated_passages(run_dir: Path, min_chars: int, max_chars: int) -> tuple[int, list[Passage]]:
    """(documents, passages) of the run's curated documents, curating them first if needed."""
    layout = RunLayout(run_dir)
    if not (layout.curate / "manifest.json").exists():
        run_stages(load_recipe(ROOT / "recipes" / "tiny-cpu.toml"), layout, until="curate")
    docs = list(iter_records(layout.curate / "documents", columns=["id", "text", *PROVENANCE]))
    return len(docs), [p for d in docs for p in document_passages(d, min_chars, max_chars)]


def gold_ranks(search: Callable[[str, int], list[Hit]], questions: Sequence[Question],
               depth: int = max(RANKS)) -> list[int | None]:
    ranks = []
    for q in questions:
        hits = search(q.question, depth)
        ranks.append(next((r for r, h in enumerate(hits, 1) if q.is_gold(h.passage)), None))
    return ranks


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(backend, passages: Sequence[Passage], documents: int,
            questions: Sequence[Question], work: Path, scale: int) -> dict:
    folder = work / re.sub(r"\W+", "-", backend.name)
    shutil.rmtree(folder, ignore_errors=True)
    corpus = list(passages) * scale
    if scale > 1:  # the copies keep their rows; gold is found in the first copy as well
        corpus = [dataclasses.replace(p, id=f"{p.id}@{i // len(passages)}")
                  for i, p in enumerate(corpus)]
    wall, cpu = time.perf_counter(), time.process_time()
    backend.build(corpus, folder)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    opened = time.perf_counter()
    backend.open(folder)
    opened = time.perf_counter() - opened
    latencies, cpus = [], []
    for round_ in range(5):
        for q in questions:
            t, c = time.perf_counter(), time.process_time()
            backend.search(q.question, 10)
            if round_:
                latencies.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
    latencies.sort()
    answerable = [q for q in questions if q.answerable]
    return {"backend": backend.name, "passages": len(corpus), "build_cpu_s": cpu,
            "build_wall_s": wall, "passages_per_cpu_s": len(corpus) / cpu,
            "documents_per_cpu_s": documents * scale / cpu, "mb": size(folder) / 1e6,
            "open_ms": opened * 1e3, "query_p50_ms": latencies[len(latencies) // 2] * 1e3,
            "query_p95_ms": latencies[int(len(latencies) * 0.95)] * 1e3,
            "query_cpu_ms": statistics.mean(cpus) * 1e3,
            **retrieval_scores(gold_ranks(backend.search, answerable))}


def table(rows: Sequence[dict]) -> str:
    head = ("| backend | passages | build CPU s | passages/CPU s | docs/CPU s | MB | open ms | "
            "query p50 / p95 ms | R@1 | R@3 | R@5 | R@10 | MRR@10 |")
    lines = [head, "|---|" + "---:|" * 12]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['passages']:,} | {r['build_cpu_s']:.2f} | "
            f"{r['passages_per_cpu_s']:,.0f} | {r['documents_per_cpu_s']:,.1f} | {r['mb']:.1f} | "
            f"{r['open_ms']:.0f} | {r['query_p50_ms']:.2f} / {r['query_p95_ms']:.2f} | "
            f"{r['recall@1']:.2f} | {r['recall@3']:.2f} | {r['recall@5']:.2f} | "
            f"{r['recall@10']:.2f} | {r['mrr']:.3f} |")
    return "\n".join(lines)


def windows(run_dir: Path, questions: Sequence[Question]) -> None:
    answerable = [q for q in questions if q.answerable]
    print("| window (chars) | passages | median chars | R@1 | R@3 | R@5 | MRR@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for lo, hi in ((200, 500), (300, 700), (300, 1000), (500, 1000), (700, 1400),
                   (1000, 2000)):
        _, passages = curated_passages(run_dir, lo, hi)
        retriever = BM25Retriever()
        retriever.build(passages)
        s = retrieval_scores(gold_ranks(retriever.search, answerable))
        median = statistics.median(len(p.text) for p in passages)
        print(f"| {lo}-{hi} | {len(passages):,} | {median:.0f} | {s['recall@1']:.2f} | "
              f"{s['recall@3']:.2f} | {s['recall@5']:.2f} | {s['mrr']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "tiny-cpu",
                        help="a run with a curate stage (made if missing)")
    parser.add_argument("--scale", type=int, default=1, help="index the passages N times")
    parser.add_argument("--windows", action="store_true",
                        help="recall and MRR of the default backend per passage window")
    args = parser.parse_args()
    questions = read_questions(QUESTIONS)
    if args.windows:
        return windows(args.run_dir, questions)
    documents, passages = curated_passages(args.run_dir, 500, 1000)
    backends = [Fournil()]
    try:
        import tantivy  # noqa: F401
        backends.append(Tantivy())
    except ImportError:
        print("tantivy is not installed (pip install tantivy==0.27.0): its line is left out")
    backends.append(NaiveBM25())
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(b, passages, documents, questions, Path(work), args.scale)
                for b in backends]
    print(f"{documents} documents, {len(passages):,} passages x{args.scale}; "
          f"{sum(q.answerable for q in questions)} answerable questions; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(table(rows))


if __name__ == "__main__":
    main()
