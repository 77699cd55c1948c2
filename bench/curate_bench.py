"""Curation throughput and near-duplicate quality: fournil against datatrove, same input.

    python bench/curate_bench.py                        # the whole bundled corpus
    python bench/curate_bench.py --chunks 200 --work /tmp/cb    # a quick run, outputs kept

Builds one JSONL input from the bundled corpus (novellas, plays, Wikipedia articles cut into
~2 KB documents) plus planted near-duplicates of every other document (word edits, a moved
paragraph, a changed header and footer, case and line-wrap changes, edits + header), then runs
on it, one after the other, each in a fresh process pinned to the same single core:

- fournil: `run_ingest` + `run_curate` with the default config: license gate, Unicode
  normalisation, PII scrub, language ID, Gopher/C4/FineWeb quality rules, OCR-noise score,
  exact dedup and MinHash-LSH near-dedup (letter 8-grams of the OCR skeleton, 64 x 3 bands,
  checked pairs; more work than datatrove's side does);
- datatrove: JsonlReader -> GopherRepetitionFilter -> GopherQualityFilter -> exact dedup
  (ExactDedupSignature / ExactFindDedups / ExactDedupFilter on the same casefolded,
  whitespace-collapsed key as fournil's) -> MinhashDedupSignature / Buckets / Cluster /
  Filter with its defaults, 5-word shingles and 14 x 8 bands (fournil's defaults until
  bench/near_dup_bench.py measured them on OCR'd copies). French words come from spaCy's
  blank French tokenizer, datatrove's assignment for `fr`, which ships in the spaCy wheel:
  nothing is downloaded (the run sets HF_HUB_OFFLINE).

Prints docs/s per core for each and the ratio, then near-duplicate recall and precision on the
planted pairs for each: a pair counts when both halves pass the quality filters; it is found
when dedup drops one of them; a dedup drop is right when it is half of a planted pair whose
other half is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from fournil.curate.near_copies import NEAR_COPY_KINDS, chunk

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
# Gopher wants >= 2 of 8 common function words; these are French's
FRENCH_STOP_WORDS = ["le", "la", "les", "de", "et", "à", "que", "un"]

# ---------------------------------------------------------------------------------- input


def corpus_chunks(min_chars: int = 2000) -> list[tuple[str, str]]:
    """(id, text) documents of ~2 KB from every bundled text, whole lines each."""
    texts = [(p.stem, p.read_text(encoding="utf-8"))
             for folder in ("nouvelles19", "theatre17")
             for p in sorted((DATA / "cligs-textbox-fr" / folder).glob("*.txt"))]
    for path in sorted((DATA / "wikipedia-fr-sample").glob("article_*.json")):
        texts.append((path.stem, json.loads(path.read_text(encoding="utf-8"))["text_clean"]))
    # the tail of a text, short or not, is a document too: the quality filters have their say
    return [(f"{name}-{k:05d}", piece) for k, (name, piece) in
            enumerate((name, piece) for name, text in texts for piece in chunk(text, min_chars))]


def build_input(folder: Path, max_chunks: int | None = None,
                seed: int = 0) -> dict[str, tuple[str, str]]:
    """Write the bench input as JSONL in `folder`; return planted id -> (original id, kind)."""
    rng = random.Random(seed)
    chunks = corpus_chunks()
    if max_chunks:
        chunks = random.Random(seed).sample(chunks, min(max_chunks, len(chunks)))
    records = [{"id": doc_id, "text": text} for doc_id, text in chunks]
    planted = {}
    for k, (doc_id, text) in enumerate(chunks[::2]):
        kind = list(NEAR_COPY_KINDS)[k % len(NEAR_COPY_KINDS)]
        records.append({"id": f"{doc_id}~{kind}", "text": NEAR_COPY_KINDS[kind](text, rng)})
        planted[records[-1]["id"]] = (doc_id, kind)
    # planted copies are spread through the input, not all at its end
    rng.shuffle(records)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "docs.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return planted


def read_input(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl"))
            for line in open(path, encoding="utf-8")]


# ---------------------------------------------------------------------------------- runs


def _isolate(cores: list[int], work: Path) -> None:
    """Pin this process (and what it starts) to `cores`; its logs and bars go to a file."""
    os.sched_setaffinity(0, cores)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(len(cores))
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "stderr.log", "w")  # noqa: SIM115 - open for the process's lifetime
    os.dup2(log.fileno(), 2)
    sys.stderr = log


def run_fournil(input_dir: Path, work: Path, cores: list[int]) -> dict:
    _isolate(cores, work)
    from fournil.core.shards import iter_records
    from fournil.curate.config import CurateConfig
    from fournil.curate.stage import run_curate
    from fournil.ingest.config import SourceSpec
    from fournil.ingest.stage import run_ingest

    config = CurateConfig()  # the defaults: every filter, PII, exact and near dedup
    source = SourceSpec(path=str(input_dir), name="bench", license="CC0-1.0", format="jsonl")
    start = time.perf_counter()
    run_ingest([source], work / "ingest", resolve=Path)
    ingest_s = time.perf_counter() - start
    run_curate(work / "ingest", work / "curate", config)
    total_s = time.perf_counter() - start
    kept = [r["id"] for r in iter_records(work / "curate" / "documents", columns=["id"])]
    rejected = [(r["id"], r["reason"]) for r in iter_records(work / "curate" / "rejected",
                                                            columns=["id", "reason"])]
    strip = len("bench/")
    return {
        "seconds": total_s, "ingest_s": ingest_s, "curate_s": total_s - ingest_s,
        "kept": sorted(i[strip:] for i in kept),
        "rejected": {i[strip:]: reason for i, reason in rejected},
    }


def run_datatrove(input_dir: Path, work: Path, cores: list[int]) -> dict:
    _isolate(cores, work)
    os.environ["HF_HUB_OFFLINE"] = "1"  # anything that tries the network fails loudly
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.exact_dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
    )
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    load_word_tokenizer("fr").word_tokenize("Chauffe.")  # spaCy's French loaded before timing

    def dedup_key(doc: Document) -> str:  # fournil's exact-dedup key
        return " ".join(doc.text.casefold().split())

    minhash = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1)
    exact = ExactDedupConfig(content_getter=dedup_key)
    d = {name: str(work / name) for name in (
        "quality", "exact_sigs", "exact_dups", "exact", "minhash_sigs", "buckets", "clusters",
        "final", "logs")}

    stage_s: dict[str, float] = {}
    runs: list[str] = []

    def run(name: str, pipeline: list, tasks: int = 1) -> None:
        runs.append(name)  # each run its own logging folder, or datatrove skips it as done
        start = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                              logging_dir=f"{d['logs']}/{len(runs)}").run()
        stage_s[name] = stage_s.get(name, 0.0) + time.perf_counter() - start

    start = time.perf_counter()
    run("read, gopher filters, write, exact-dedup hashes", [
        JsonlReader(str(input_dir)),
        GopherRepetitionFilter(language="fr"),
        GopherQualityFilter(language="fr", stop_words=FRENCH_STOP_WORDS),
        JsonlWriter(d["quality"], compression=None),
        ExactDedupSignature(d["exact_sigs"], config=exact),
    ])
    run("exact-dedup find", [ExactFindDedups(d["exact_sigs"], d["exact_dups"], config=exact)])
    run("exact-dedup filter, write, minhash signatures", [
        JsonlReader(d["quality"]),
        ExactDedupFilter(d["exact_dups"], config=exact),
        JsonlWriter(d["exact"], compression=None),
        MinhashDedupSignature(d["minhash_sigs"], config=minhash, language="fr"),
    ])
    # one task per band, one after the other
    lsh = "minhash buckets + clusters"
    run(lsh, [MinhashDedupBuckets(d["minhash_sigs"], d["buckets"], config=minhash)],
        tasks=minhash.num_buckets)
    run(lsh, [MinhashDedupCluster(d["buckets"], d["clusters"], config=minhash)])
    run("minhash filter, write", [
        JsonlReader(d["exact"]),
        MinhashDedupFilter(d["clusters"]),
        JsonlWriter(d["final"], compression=None),
    ])
    seconds = time.perf_counter() - start

    def ids(folder: str) -> set[str]:
        return {json.loads(line)["id"] for p in Path(folder).glob("*.jsonl")
                for line in open(p, encoding="utf-8")}

    passed, deduped, final = ids(d["quality"]), ids(d["exact"]), ids(d["final"])
    all_ids = {record["id"] for record in read_input(input_dir)}
    rejected = {i: "quality" for i in all_ids - passed}
    rejected |= {i: "dup:exact" for i in passed - deduped}
    rejected |= {i: "dup:near" for i in deduped - final}
    return {"seconds": seconds, "stages": stage_s, "kept": sorted(final), "rejected": rejected}


RUNS = {"fournil": run_fournil, "datatrove": run_datatrove}


def in_fresh_process(name: str, input_dir: Path, work: Path, cores: list[int]) -> dict:
    """Run one side in a new interpreter: its imports, caches and threads do not leak."""
    out = work / "result.json"
    from peers import peer_python  # datatrove's pins break the project's environment

    python = peer_python("datatrove") if name == "datatrove" else sys.executable
    command = [str(python), __file__, "--run", name, "--input", str(input_dir),
               "--work", str(work), "--pin", ",".join(map(str, cores))]
    if subprocess.run(command).returncode != 0:
        log = (work / "stderr.log").read_text(encoding="utf-8", errors="replace")
        sys.exit(f"{name} failed; the end of {work / 'stderr.log'}:\n{log[-3000:]}")
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------- metrics


def near_dup_scores(result: dict, planted: dict[str, tuple[str, str]]) -> dict:
    kept, rejected = set(result["kept"]), result["rejected"]
    dropped = {i for i, reason in rejected.items() if reason.startswith("dup:")}
    partner = {copy: original for copy, (original, _) in planted.items()}
    partner |= {original: copy for copy, original in list(partner.items())}
    eligible = [(c, o, kind) for c, (o, kind) in planted.items()
                if rejected.get(c, "dup:").startswith("dup:")
                and rejected.get(o, "dup:").startswith("dup:")]
    found = [(c, o, kind) for c, o, kind in eligible if c in dropped or o in dropped]
    right = [i for i in dropped if i in partner and partner[i] in kept]
    by_kind = Counter(kind for _, _, kind in eligible)
    found_by_kind = Counter(kind for _, _, kind in found)
    return {
        "pairs": len(eligible), "found": len(found), "dropped": len(dropped),
        "recall": len(found) / max(len(eligible), 1),
        "precision": len(right) / max(len(dropped), 1),
        "by_kind": {k: (found_by_kind[k], n) for k, n in sorted(by_kind.items())},
    }


# ---------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path,
                        help="working folder, kept (default: a temp folder, removed)")
    parser.add_argument("--chunks", type=int, help="use this many corpus chunks (default: all)")
    parser.add_argument("--skip-datatrove", action="store_true")
    # internal: one side's run, in its own process
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pin", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        result = RUNS[args.run](args.input, args.work, [int(c) for c in args.pin.split(",")])
        (args.work / "result.json").write_text(json.dumps(result))
        return

    # one core each: docs/s/core without the noise of process start-up and scheduling
    cores = sorted(os.sched_getaffinity(0))[:1]
    work = args.work or Path(tempfile.mkdtemp(prefix="curate-bench-"))
    if work.exists():
        shutil.rmtree(work)
    input_dir = work / "input"
    planted = build_input(input_dir, args.chunks)
    n_docs = len(read_input(input_dir))
    size = sum(p.stat().st_size for p in input_dir.glob("*.jsonl"))
    print(f"input: {n_docs} docs ({n_docs - len(planted)} chunks of the bundled corpus + "
          f"{len(planted)} planted near-duplicates), {size / 1e6:.1f} MB; "
          f"{len(cores)} core(s) each: CPU {cores}; load average {os.getloadavg()[0]:.2f} "
          f"(other work on the machine slows both sides)", flush=True)

    results = {name: in_fresh_process(name, input_dir, work / name, cores)
               for name in RUNS if not (name == "datatrove" and args.skip_datatrove)}
    f = results["fournil"]

    def rate(seconds: float) -> float:
        return n_docs / seconds / len(cores)

    print()
    print(f"{'pipeline':<52} {'docs':>6} {'seconds':>8} {'docs/s/core':>12}")
    rows = [("fournil: ingest + curate (all filters, PII, dedup)", f["seconds"]),
            ("  of which ingest (JSONL -> Parquet)", f["ingest_s"]),
            ("  of which run_curate", f["curate_s"])]
    if "datatrove" in results:
        rows.append(("datatrove: gopher + exact + minhash", results["datatrove"]["seconds"]))
        rows += [(f"  {name}", seconds) for name, seconds in results["datatrove"]["stages"].items()]
    for name, seconds in rows:
        print(f"{name:<52} {n_docs:>6} {seconds:>8.2f} {rate(seconds):>12.1f}")
    if "datatrove" in results:
        ratio = results["datatrove"]["seconds"] / f["seconds"]
        print(f"\nratio fournil / datatrove (docs/s/core): {ratio:.1f}x  (target >= 5x)")

    print(f"\n{'near-dups':<12} {'pairs':>6} {'found':>6} {'recall':>7} {'dropped':>8} "
          f"{'precision':>9}   recall by kind (found/pairs)")
    for name, result in results.items():
        s = near_dup_scores(result, planted)
        kinds = ", ".join(f"{k} {a}/{b}" for k, (a, b) in s["by_kind"].items())
        print(f"{name:<12} {s['pairs']:>6} {s['found']:>6} {s['recall']:>7.3f} "
              f"{s['dropped']:>8} {s['precision']:>9.3f}   {kinds}")
    print("\nrejections:")
    for name, result in results.items():
        reasons = Counter(result["rejected"].values())
        print(f"  {name}: kept {len(result['kept'])}, " +
              ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())))
    if args.work:
        print(f"\nwork folder (inputs, outputs, each run's stderr.log): {work}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
