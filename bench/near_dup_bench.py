"""Near-duplicates as OCR'd collections have them: planted copies and hard negatives, the
curate stage's near-dedup before (datatrove's word 5-grams, 14 x 8 bands) and after (its
defaults), side by side in one run.

    python bench/near_dup_bench.py              # the table; ~3,100 docs, ~2-3 minutes
    python bench/near_dup_bench.py --sweep      # the alternatives: signatures + LSH only
    python bench/near_dup_bench.py --originals 300 --repeat 1   # a quick run

Input, all from the bundled corpus (novellas, plays, Wikipedia articles cut into ~2 KB
documents of whole lines; `fournil.curate.near_copies` makes every perturbation):

- originals, each with one planted copy, the kinds in turn: the same text scanned again
  with 2%, 3% or 5% of its characters misread (`ocr_rescan`: the synth OCR noise model,
  plus a third of the errors as random letters the model does not know), both sides
  scanned at 3%, another library's page furniture (running heads, page numbers, stamps),
  paragraphs swapped at page breaks, cut a few lines earlier or later (70-90% shared),
  the word edits, moved paragraph, header/footer and case/wrap changes of
  bench/curate_bench.py, and two combinations (3% OCR + both sides' furniture + cut; 5%
  OCR + furniture + page order);
- hard negatives that must never be merged: every two documents of one work (same style,
  same names); two chapters of one book scanned by the same library (same running head
  and stamp, 3% OCR each); two documents that quote the same 300-600-character passage;
  short documents (200-800 characters) that end with the same ~230-character notice.

The input is written as JSONL, shuffled, and each config runs `run_ingest` + `run_curate`
(every filter, PII scrub, language ID, exact and near dedup: the whole stage) in a fresh
process pinned to one core (so its tasks run inline), `--repeat` times in turn (before,
after, after, before, ...); docs/s/core is documents over the best run's `run_curate` CPU
time (the process's own, so other work on a busy machine counts less; wall time is printed
too). A planted pair
counts when both halves pass the quality filters, and is found when both end in the same
cluster (dropped as a duplicate of the other, or of the same keeper). A dedup drop (exact or
near) is right when its keeper is a copy of the same text; precision = right drops / all
drops. A hard-negative pair is merged when both halves end in one cluster.

`--sweep` computes signatures in this process (no curate: every document counts) for each
alternative and prints the same scores plus the signature time per document.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fournil.curate import minhash  # noqa: E402
from fournil.curate.config import NearDedupConfig  # noqa: E402
from fournil.curate.near_copies import (  # noqa: E402
    BOILERPLATES,
    LIBRARIES,
    NEAR_COPY_KINDS,
    add_furniture,
    chunk_spans,
    insert_quotation,
    lines_of,
    ocr_rescan,
    opening,
    recut,
    reorder_at_page_breaks,
)

DATA = ROOT / "data"
# what curate did before this benchmark: datatrove's defaults
BEFORE = NearDedupConfig(shingles="words", shingle_size=5, bands=14, rows=8,
                         verify_threshold=None)

# ---------------------------------------------------------------------------------- input


@dataclasses.dataclass
class Work:
    name: str
    title: str  # for running heads
    lines: list[str]
    spans: list[tuple[int, int]]

    def text(self, span: tuple[int, int]) -> str:
        return "\n".join(self.lines[span[0]:span[1]])


def _titles(folder: Path, title_column: str) -> dict[str, str]:
    with open(folder / "metadata.csv", encoding="utf-8") as f:
        return {row["idno"]: row[title_column] for row in csv.DictReader(f)}


def bundled_works(min_chars: int = 2000) -> list[Work]:
    works = []
    for folder, column in (("nouvelles19", "title"), ("theatre17", "title-short")):
        titles = _titles(DATA / "cligs-textbox-fr" / folder, column)
        for path in sorted((DATA / "cligs-textbox-fr" / folder).glob("*.txt")):
            title = titles.get(path.stem.rsplit("_", 1)[-1], path.stem)
            lines = lines_of(path.read_text(encoding="utf-8"))
            works.append(Work(path.stem, title, lines, chunk_spans(lines, min_chars)))
    for path in sorted((DATA / "wikipedia-fr-sample").glob("article_*.json")):
        article = json.loads(path.read_text(encoding="utf-8"))
        lines = lines_of(article["text_clean"])
        works.append(Work(path.stem, article["title"], lines, chunk_spans(lines, min_chars)))
    return works


def _quotation(work: Work, rng: random.Random) -> str:
    """300-600 characters from a random place in `work`, ending at a sentence or line end."""
    for _ in range(100):
        k = rng.randrange(len(work.lines))
        quote = opening("\n".join(work.lines[k:k + 40]), 300)
        if 300 <= len(quote) <= 600:
            return quote
        if len(quote) > 600:  # one long paragraph: its first sentences
            cut = quote.rfind(". ", 0, 600)
            if cut >= 300:
                return quote[:cut + 1]
    raise ValueError(f"no 300-600 character quotation in {work.name}")


def _slug(kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


@dataclasses.dataclass
class Bench:
    docs: list[tuple[str, str]]  # (id, text), in input order
    group: dict[str, str]  # id -> the text it is a copy of (its own id for a singleton)
    planted: list[tuple[str, str, str]]  # (original id, copy id, kind)
    negatives: list[tuple[str, str, str]]  # (id, id, kind): must never be merged


def _copy_kinds() -> dict:
    """kind -> make(work, span, rng) -> (original text, copy text)."""
    def ocr(cer):
        return lambda w, s, rng: (w.text(s), ocr_rescan(w.text(s), rng, cer))

    def edits(kind):
        return lambda w, s, rng: (w.text(s), NEAR_COPY_KINDS[kind](w.text(s), rng))

    def ocr_both(w, s, rng):
        return ocr_rescan(w.text(s), rng, 0.03), ocr_rescan(w.text(s), rng, 0.03)

    def furniture(w, s, rng):
        return w.text(s), add_furniture(w.text(s), rng, w.title, rng.choice(LIBRARIES))

    def cut(w, s, rng):
        return w.text(s), w.text(recut(w.lines, s, rng))

    def ocr_furniture_cut(w, s, rng):
        here, there = rng.sample(LIBRARIES, 2)
        copy = add_furniture(w.text(recut(w.lines, s, rng)), rng, w.title, there)
        return add_furniture(w.text(s), rng, w.title, here), ocr_rescan(copy, rng, 0.03)

    def ocr_furniture_order(w, s, rng):
        copy = add_furniture(reorder_at_page_breaks(w.text(s), rng), rng, w.title,
                             rng.choice(LIBRARIES))
        return w.text(s), ocr_rescan(copy, rng, 0.05)

    return {
        "ocr 2%": ocr(0.02), "ocr 3%": ocr(0.03), "ocr 5%": ocr(0.05),
        "ocr 3%, both sides": ocr_both,
        "ocr 5%, both sides": lambda w, s, rng: (ocr_rescan(w.text(s), rng, 0.05),
                                                 ocr_rescan(w.text(s), rng, 0.05)),
        "page furniture": furniture,
        "page order": lambda w, s, rng: (w.text(s), reorder_at_page_breaks(w.text(s), rng)),
        "cut 70-90%": cut,
        **{kind: edits(kind) for kind in NEAR_COPY_KINDS},
        "ocr 3% + furniture + cut": ocr_furniture_cut,
        "ocr 5% + furniture + order": ocr_furniture_order,
    }


COPY_KINDS = _copy_kinds()
NEGATIVE_KINDS = ("same work", "same scan, 2 chapters", "shared quotation",
                  "same notice, short docs")


def build_bench(seed: int = 0, originals: int | None = None, quotes: int = 100,
                notices: int = 25, per_notice: int = 4, scans: int = 50) -> Bench:
    """The planted pairs and hard negatives (deterministic for a seed)."""
    rng = random.Random(seed)
    works = [w for w in bundled_works() if w.spans]
    free = {(wi, si) for wi, w in enumerate(works) for si in range(len(w.spans))
            if len(w.text(w.spans[si])) >= 1000}  # a work's short tail is left out
    docs: list[tuple[str, str]] = []
    group: dict[str, str] = {}
    negatives: list[tuple[str, str, str]] = []

    def add(doc_id: str, text: str, of: str | None = None) -> str:
        docs.append((doc_id, text))
        group[doc_id] = of or doc_id
        return doc_id

    def take(k: int) -> list[tuple[int, int]]:
        picked = rng.sample(sorted(free), k)
        free.difference_update(picked)
        return picked

    def name(wi: int, si: int) -> str:
        return f"{works[wi].name}-{si:04d}"

    # two chapters of one book, scanned by one library: adjacent spans of a work
    adjacent = sorted((wi, si) for wi, si in free if (wi, si + 1) in free)
    for wi, si in rng.sample(adjacent, min(scans, len(adjacent))):
        if (wi, si) not in free or (wi, si + 1) not in free:
            continue
        free.difference_update({(wi, si), (wi, si + 1)})
        library, w = rng.choice(LIBRARIES), works[wi]
        a, b = (add(f"{name(wi, k)}#scan", ocr_rescan(
            add_furniture(w.text(w.spans[k]), rng, w.title, library), rng, 0.03))
            for k in (si, si + 1))
        negatives.append((a, b, "same scan, 2 chapters"))
    for q in range(quotes):
        (wq, sq), (w1, s1), (w2, s2) = take(3)
        quote = _quotation(works[wq], rng)
        a, b = (add(f"{name(wi, si)}#quote{q}", insert_quotation(
            works[wi].text(works[wi].spans[si]), quote, rng)) for wi, si in ((w1, s1), (w2, s2)))
        negatives.append((a, b, "shared quotation"))
    for g in range(notices):
        notice = BOILERPLATES[g % len(BOILERPLATES)]
        members = []
        for wi, si in take(per_notice):
            body = opening(works[wi].text(works[wi].spans[si]), rng.randint(200, 800))
            members.append(add(f"{name(wi, si)}#notice{g}", f"{body}\n{notice}"))
        negatives += [(a, b, "same notice, short docs") for i, a in enumerate(members)
                      for b in members[i + 1:]]

    planted = []
    by_work = defaultdict(list)
    kinds = list(COPY_KINDS)
    remaining = sorted(free)
    if originals:
        remaining = sorted(rng.sample(remaining, min(originals, len(remaining))))
    for k, (wi, si) in enumerate(remaining):
        kind = kinds[k % len(kinds)]
        original, copy = COPY_KINDS[kind](works[wi], works[wi].spans[si], rng)
        doc_id = add(name(wi, si), original)
        planted.append((doc_id, add(f"{doc_id}~{_slug(kind)}", copy, of=doc_id), kind))
        by_work[wi].append(doc_id)
    negatives += [(a, b, "same work") for ids in by_work.values()
                  for i, a in enumerate(ids) for b in ids[i + 1:]]
    rng.shuffle(docs)  # copies spread through the input, not all after their originals
    return Bench(docs, group, planted, negatives)


# ------------------------------------------------------------------------------- scores


def scores(bench: Bench, dup_of: dict[str, str], eligible: set[str]) -> dict:
    """Recall per kind, precision of the drops, hard-negative pairs merged."""
    def cluster(doc_id: str) -> str:
        return dup_of.get(doc_id, doc_id)

    found, pairs = Counter(), Counter()
    for original, copy, kind in bench.planted:
        if original in eligible and copy in eligible:
            pairs[kind] += 1
            found[kind] += cluster(original) == cluster(copy)
    merged, negatives = Counter(), Counter()
    for a, b, kind in bench.negatives:
        if a in eligible and b in eligible:
            negatives[kind] += 1
            merged[kind] += cluster(a) == cluster(b)
    right = sum(bench.group[d] == bench.group[k] for d, k in dup_of.items())
    return {"found": found, "pairs": pairs, "merged": merged, "negatives": negatives,
            "drops": len(dup_of), "right": right,
            "recall": sum(found.values()) / max(1, sum(pairs.values())),
            "precision": right / max(1, len(dup_of))}


def char_difference(bench: Bench) -> dict[str, float]:
    """Per kind, the mean share of characters that differ between a pair's texts
    (Levenshtein distance over the longer length, whitespace runs collapsed)."""
    from rapidfuzz.distance import Levenshtein

    text = dict(bench.docs)
    diffs = defaultdict(list)
    for original, copy, kind in bench.planted:
        diffs[kind].append(Levenshtein.normalized_distance(" ".join(text[original].split()),
                                                           " ".join(text[copy].split())))
    return {kind: float(np.mean(d)) for kind, d in diffs.items()}


# --------------------------------------------------------------------- curate, pinned


def run_curate_once(input_dir: Path, work: Path, near: dict, core: int) -> dict:
    """`run_ingest` + `run_curate` with default settings but `near`, on one core."""
    os.sched_setaffinity(0, [core])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "stderr.log", "w")  # noqa: SIM115 - open for the process's lifetime
    os.dup2(log.fileno(), 2)
    sys.stderr = log
    from fournil.core.shards import iter_records
    from fournil.curate.config import CurateConfig
    from fournil.curate.stage import run_curate
    from fournil.ingest.config import SourceSpec
    from fournil.ingest.stage import run_ingest

    config = CurateConfig(workers=1, near_dedup=NearDedupConfig(**near))
    source = SourceSpec(path=str(input_dir), name="b", license="CC0-1.0", format="jsonl")
    run_ingest([source], work / "ingest", resolve=Path)
    start, cpu_start = time.perf_counter(), time.process_time()
    run_curate(work / "ingest", work / "curate", config)  # one core: tasks run inline
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    rejected = list(iter_records(work / "curate" / "rejected", columns=["id", "reason",
                                                                        "dup_of"]))
    kept = [r["id"] for r in iter_records(work / "curate" / "documents", columns=["id"])]
    strip = len("b/")
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "kept": [i[strip:] for i in kept],
            "rejected": {r["id"][strip:]: r["reason"] for r in rejected},
            "dup_of": {r["id"][strip:]: r["dup_of"][strip:] for r in rejected
                       if r["reason"].startswith("dup:")}}


def in_fresh_process(input_dir: Path, work: Path, near: NearDedupConfig, core: int) -> dict:
    if work.exists():
        shutil.rmtree(work)
    command = [sys.executable, __file__, "--run", json.dumps(dataclasses.asdict(near)),
               "--input", str(input_dir), "--work", str(work), "--core", str(core)]
    if subprocess.run(command).returncode != 0:
        log = (work / "stderr.log").read_text(encoding="utf-8", errors="replace")
        sys.exit(f"curate failed; the end of {work / 'stderr.log'}:\n{log[-3000:]}")
    return json.loads((work / "result.json").read_text())


def describe(config: NearDedupConfig) -> str:
    verify = f", verify {config.verify_threshold:.2f}" if config.verify_threshold else ""
    return f"{config.shingles} {config.shingle_size}, {config.bands}x{config.rows}{verify}"


def print_table(bench: Bench, columns: dict[str, dict], rates: dict[str, float],
                wall_rates: dict[str, float]) -> None:
    names = list(columns)
    width = 20
    print(f"{'':<40}" + "".join(f"{n:>{width}}" for n in names))
    print("recall by kind (found/pairs); the pair's texts differ in")
    differ = char_difference(bench)
    for kind in COPY_KINDS:
        cells = [f"{c['found'][kind]}/{c['pairs'][kind]}" for c in columns.values()]
        label = f"{kind} ({differ[kind]:.1%})"
        print(f"  {label:<38}" + "".join(f"{x:>{width}}" for x in cells))
    print("hard negatives merged (pairs)")
    for kind in NEGATIVE_KINDS:
        cells = [f"{c['merged'][kind]}/{c['negatives'][kind]}" for c in columns.values()]
        print(f"  {kind:<38}" + "".join(f"{x:>{width}}" for x in cells))
    rows = [("recall", [f"{c['recall']:.3f}" for c in columns.values()]),
            ("precision (right/drops)", [f"{c['precision']:.3f} ({c['right']}/{c['drops']})"
                                          for c in columns.values()])]
    for label, rate in (("curate docs/s/core (CPU time)", rates),
                        ("curate docs/s/core (wall time)", wall_rates)):
        rows.append((label, [f"{rate[n]:.0f} ({rate[n] / rate[names[0]]:.2f}x)"
                             for n in names]))
    for label, cells in rows:
        print(f"{label:<40}" + "".join(f"{x:>{width}}" for x in cells))


def before_after(args: argparse.Namespace, bench: Bench) -> None:
    core = sorted(os.sched_getaffinity(0))[-1]
    work = args.work or Path(tempfile.mkdtemp(prefix="near-dup-bench-"))
    input_dir = work / "input"
    input_dir.mkdir(parents=True, exist_ok=True)
    with open(input_dir / "docs.jsonl", "w", encoding="utf-8") as f:
        for doc_id, text in bench.docs:
            f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    configs = {"before": BEFORE, "after": NearDedupConfig()}
    for name, config in configs.items():
        print(f"{name}: {describe(config)}")
    print(f"input: {len(bench.docs)} docs ({len(bench.planted)} planted pairs, "
          f"{len(bench.negatives)} hard-negative pairs); CPU {core}; "
          f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    runs: dict[str, list[tuple[float, float]]] = {}
    results: dict[str, dict] = {}
    loads = []
    for r in range(args.repeat):
        # before, after, after, before, ...: neither side always runs second
        for name, config in list(configs.items())[::1 if r % 2 == 0 else -1]:
            loads.append(os.getloadavg()[0])
            result = in_fresh_process(input_dir, work / name, config, core)
            if name in results and result["dup_of"] != results[name]["dup_of"]:
                sys.exit(f"{name}: run {r + 1} dropped other documents than run 1")
            results.setdefault(name, result)
            best[name] = min(best.get(name, float("inf")), result["seconds"])
            best_cpu[name] = min(best_cpu.get(name, float("inf")), result["cpu_seconds"])
            runs.setdefault(name, []).append((result["cpu_seconds"], result["seconds"]))
    columns = {}
    for name, result in results.items():
        eligible = {doc_id for doc_id, _ in bench.docs
                    if result["rejected"].get(doc_id, "dup:").startswith("dup:")}
        columns[name] = scores(bench, result["dup_of"], eligible)
    rates = {name: len(bench.docs) / seconds for name, seconds in best_cpu.items()}
    wall_rates = {name: len(bench.docs) / seconds for name, seconds in best.items()}
    print(f"\nload average during the runs: {min(loads):.2f}-{max(loads):.2f} "
          f"(best of {args.repeat} run(s) per config, in turn, the order swapped each "
          f"round)")
    for name, times in runs.items():
        print(f"  {name} run_curate seconds, CPU / wall: " +
              ", ".join(f"{cpu:.2f} / {wall:.2f}" for cpu, wall in times))
    print()
    print_table(bench, columns, rates, wall_rates)
    lost = {name: Counter(reason for reason in result["rejected"].values()
                          if not reason.startswith("dup:"))
            for name, result in results.items()}
    print(f"\nrejected by the quality filters (pairs with such a half do not count): "
          f"{dict(lost['after'])}")
    if not args.work:
        shutil.rmtree(work)


# ------------------------------------------------------------------------------ sweep


def _plain_letters(accents: bool):
    """Skeletons without the OCR folding, for the ablation: letters only, casefolded,
    accents kept (NFC) or dropped (NFKD), no look-alike classes."""
    from fournil.curate.normalize import _letter_table

    fold = _letter_table()[0]

    def letters(text: str) -> np.ndarray:
        import unicodedata
        text = unicodedata.normalize("NFC" if accents else "NFKD", text).casefold()
        points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        points = points[points < 0x10000]
        keep = fold[points] != 0
        return points[keep] if accents else fold[points][keep]
    return letters


def _signatures_with(letters_fn, texts: list[str], config: NearDedupConfig) -> np.ndarray:
    """Letter signatures over another skeleton (the ablation rows)."""
    out = np.empty((len(texts), config.num_perm), np.uint32)
    original = minhash.ocr_letters
    minhash.ocr_letters = letters_fn  # the one function the letter shingles read
    try:
        for i, text in enumerate(texts):
            out[i] = minhash.signature(text, config)
    finally:
        minhash.ocr_letters = original
    return out


def _dedup(ids: list[str], sigs: np.ndarray, config: NearDedupConfig, keep) -> dict:
    """find_duplicates with another check of the LSH candidates: keep(i, j) -> mask."""
    i, j = minhash._candidate_pairs(sigs, config)
    if i.size:
        mask = keep(i, j)
        i, j = i[mask], j[mask]
    root = minhash._components(len(ids), i, j)
    return {ids[k]: ids[root[k]] for k in np.flatnonzero(root != np.arange(len(ids)))}


def sweep(bench: Bench) -> None:
    """Signatures and LSH alone, for each alternative; every document counts."""
    from rapidfuzz import fuzz

    from fournil.curate.normalize import normalize_text

    os.sched_setaffinity(0, [sorted(os.sched_getaffinity(0))[-1]])
    ids = [doc_id for doc_id, _ in bench.docs]
    texts = [normalize_text(text) for _, text in bench.docs]
    eligible = set(ids)
    default = NearDedupConfig()
    lsh = {"bands": default.bands, "rows": default.rows,
           "verify_threshold": default.verify_threshold}
    rows: list[tuple[str, NearDedupConfig, object]] = [
        ("", BEFORE, None),
        ("", NearDedupConfig(shingles="words", shingle_size=5, **lsh), None),
        ("", NearDedupConfig(shingles="words", shingle_size=2, **lsh), None),
        (", no OCR folding, accents kept", default, _plain_letters(accents=True)),
        (", no OCR folding", default, _plain_letters(accents=False)),
    ]
    rows += [("", NearDedupConfig(shingle_size=k), None) for k in (5, 6, 7, 10, 12)]
    rows += [("", NearDedupConfig(bands=b, rows=r, verify_threshold=v), None)
             for b, r, v in ((14, 8, None), (20, 5, None), (40, 3, None), (64, 3, None),
                             (40, 3, 0.35), (40, 3, 0.40), (50, 3, 0.35), (32, 4, 0.40),
                             (50, 4, 0.40), (96, 2, 0.40), (64, 3, 0.30), (64, 3, 0.35),
                             (64, 3, 0.40), (64, 3, 0.45))]
    cache: dict[tuple, tuple[np.ndarray, float]] = {}

    def sigs_of(config: NearDedupConfig, letters_fn=None) -> tuple[np.ndarray, float]:
        key = (config.shingles, config.shingle_size, config.num_perm, config.seed, letters_fn)
        if key not in cache:
            start = time.process_time()
            sigs = (_signatures_with(letters_fn, texts, config) if letters_fn else
                    minhash.signatures(texts, config))
            cache[key] = (sigs, (time.process_time() - start) / len(texts) * 1e3)
        return cache[key]

    def report(label: str, config: NearDedupConfig, dup_of: dict, ms: float,
               candidates: int) -> None:
        s = scores(bench, dup_of, eligible)
        weakest = sorted(COPY_KINDS, key=lambda k: s["found"][k] / max(1, s["pairs"][k]))[:2]
        negatives = "/".join(f"{s['merged'][k]}" for k in NEGATIVE_KINDS)
        print(f"{label:<52} {ms:>6.3f} {candidates / len(ids):>6.2f} {s['recall']:>6.3f} "
              f"{s['precision']:>6.3f}  {negatives:<9} " +
              ", ".join(f"{k} {s['found'][k]}/{s['pairs'][k]}" for k in weakest), flush=True)

    print(f"{len(ids)} docs; CPU {sorted(os.sched_getaffinity(0))}; load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print(f"{'alternative':<52} {'ms/doc':>6} {'cand.':>6} {'recall':>6} {'prec':>6}  "
          f"{'merged':<9} weakest kinds")
    for note, config, letters_fn in rows:
        label = describe(config) + note + (" (default)" if config == default and not note
                                           else " (before)" if config == BEFORE else "")
        sigs, ms = sigs_of(config, letters_fn)
        candidates = minhash._candidate_pairs(sigs, config)[0].size
        report(label, config, minhash.find_duplicates(ids, sigs, config), ms, candidates)

    # other checks of the default's LSH candidates than the signature's agreement
    sigs, ms = sigs_of(default)
    loose = dataclasses.replace(default, verify_threshold=None)
    candidates = minhash._candidate_pairs(sigs, loose)[0].size
    sizes = np.array([np.unique(minhash.letter_shingle_hashes(t, default.shingle_size,
                                                              default.seed)).size
                      for t in texts])

    def agreement(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return (sigs[i] == sigs[j]).mean(axis=1)

    def containment(threshold: float):
        def keep(i, j):
            jac = agreement(i, j)
            shared = jac * (sizes[i] + sizes[j]) / (1 + jac)
            return shared / np.minimum(sizes[i], sizes[j]) >= threshold
        return keep

    def token_set(threshold: float):
        return lambda i, j: np.array([fuzz.token_set_ratio(texts[a].casefold(),
                                                           texts[b].casefold()) >= threshold
                                      for a, b in zip(i, j, strict=True)], bool)

    base = describe(loose)
    for label, keep in ((f"{base}, containment >= .5", containment(0.5)),
                        (f"{base}, containment >= .6", containment(0.6)),
                        (f"{base}, token-set ratio >= 70", token_set(70)),
                        (f"{base}, token-set ratio >= 80", token_set(80))):
        report(label, loose, _dedup(ids, sigs, loose, keep), ms, candidates)

    # margins of the default: signature agreement of the planted pairs and hard negatives
    index = {doc_id: k for k, doc_id in enumerate(ids)}
    print("\nthe default's signature agreement (its Jaccard estimate; verify threshold "
          f"{default.verify_threshold}):")
    for kind in COPY_KINDS:
        pairs = [(index[a], index[b]) for a, b, k in bench.planted if k == kind]
        agree = agreement(*map(np.array, zip(*pairs, strict=True)))
        print(f"  {kind:<28} min {agree.min():.2f}  1st percentile "
              f"{np.percentile(agree, 1):.2f}  median {np.median(agree):.2f}")
    for kind in NEGATIVE_KINDS:
        pairs = [(index[a], index[b]) for a, b, k in bench.negatives if k == kind]
        agree = agreement(*map(np.array, zip(*pairs, strict=True)))
        print(f"  {kind:<28} max {agree.max():.2f}  99th percentile "
              f"{np.percentile(agree, 99):.2f}  median {np.median(agree):.2f}")
    print(f"\nms/doc: signature CPU time per document; cand.: LSH candidate pairs per "
          f"document; merged: hard-negative pairs merged ({', '.join(NEGATIVE_KINDS)})")


# ---------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--originals", type=int, help="originals with a planted copy "
                        "(default: every chunk not used for a hard negative)")
    parser.add_argument("--repeat", type=int, default=4, help="curate runs per config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="the alternatives, no curate")
    parser.add_argument("--work", type=Path, help="working folder, kept")
    # internal: one curate run in its own process
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        result = run_curate_once(args.input, args.work, json.loads(args.run), args.core)
        (args.work / "result.json").write_text(json.dumps(result))
        return
    bench = build_bench(args.seed, args.originals)
    if args.sweep:
        sweep(bench)
    else:
        before_after(args, bench)


if __name__ == "__main__":
    main()
