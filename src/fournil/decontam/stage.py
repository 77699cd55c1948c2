"""The decontam stage: evidence that no evaluation text is in what the model trains on.

A score on a test set says little if the test set's text was in the training data. Like
GPT-3's decontamination (Brown et al. 2020, appendix C), this stage looks for every window of
`ngram` consecutive words of the evaluation files the recipe names (`decontam.against`) in
the run's documents (curated, or corrected) and in its synthetic training samples: the texts
the later stages train on. Words are compared after NFKC, case folding and the removal of
punctuation, on both sides alike: "L'Été," and "l'été" both read "lété" (accents stay), and an
aligned ICDAR gold line, whose '@' pads the alignment, reads as its text.

Every training text with a shared window is written to `overlaps.jsonl` (its id, source, the
evaluation file, how many windows it shares and the first one). With `on_overlap = "fail"`
(the default) the stage stops there, naming the first, and nothing downstream runs: fix the
data, or say `report` to train anyway with the overlap on record in the manifest.

    fournil decontam -r recipes/smollm2-ocr-fr.toml --against ../shared/data/icdar2017-ocr-fr-eval

Evaluation texts shorter than `ngram` words cannot be checked this way; the manifest counts
them (`too_short`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import numpy as np
import pyarrow.compute as pc
import xxhash
from tqdm import tqdm

from fournil.core.shards import count_rows, iter_batches
from fournil.core.stage import Context, Manifest, Stage, hash_files, upstream_hash
from fournil.decontam.config import DecontamConfig

TEXT_SUFFIXES = (".txt", ".md")
JSON_SUFFIXES = (".jsonl", ".json")
SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES
_PUNCTUATION = re.compile(r"[^\w\s]")
_WORD = re.compile(r"\w+")
# odd 64-bit multiplier of the rolling window hash (the golden-ratio constant)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


class DecontamCounts(TypedDict):
    documents: int  # training texts checked: documents ...
    samples: int  # ... and synthetic training samples
    against_files: int
    against_windows: int  # distinct word windows of the evaluation texts
    too_short: int  # evaluation texts shorter than one window, not checked
    overlapping_documents: int
    overlapping_samples: int


class DecontamManifest(Manifest):
    counts: DecontamCounts
    against: list[str]  # the evaluation files read
    ngram: int  # words per window


def words(text: str) -> list[str]:
    """The words compared: NFKC, case-folded, punctuation removed (not split on), so both
    sides of a comparison read the same however they were typeset."""
    return _WORD.findall(_PUNCTUATION.sub("", unicodedata.normalize("NFKC", text).casefold()))


def window_hashes(text_words: list[str], n: int) -> np.ndarray:
    """A 64-bit hash of every window of `n` consecutive words (a polynomial over the words'
    xxh64, wrapping mod 2**64): equal windows hash equal; distinct ones collide with
    probability ~2**-64 per pair."""
    count = len(text_words) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    word_hashes = np.fromiter((xxhash.xxh64_intdigest(w.encode()) for w in text_words),
                              dtype=np.uint64, count=len(text_words))
    hashes = np.zeros(count, dtype=np.uint64)
    for j in range(n):
        hashes = hashes * _MULTIPLIER + word_hashes[j:j + count]
    return hashes


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def evaluation_files(paths: list[Path]) -> list[Path]:
    """The files named, and the readable ones of the folders named, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file()
                            and p.suffix in SUFFIXES)
        elif path.is_file():
            if path.suffix not in SUFFIXES:
                raise ValueError(f"{path}: decontam reads {', '.join(SUFFIXES)} files")
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such evaluation file or folder (decontam.against)")
    return files


def evaluation_texts(path: Path) -> Iterator[str]:
    """A text file whole; every string of every JSON record (questions, answers, passages)."""
    if path.suffix in TEXT_SUFFIXES:
        yield path.read_text(encoding="utf-8", errors="replace")
        return
    raw = path.read_text(encoding="utf-8-sig")
    lines = raw.splitlines() if path.suffix == ".jsonl" else [raw]
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield from _strings(json.loads(line))
            except json.JSONDecodeError as e:
                where = f"{path}:{number}" if path.suffix == ".jsonl" else str(path)
                raise ValueError(f"{where}: not JSON ({e.msg})") from None


class WindowIndex:
    """Every window of the evaluation texts, sorted, with the file it came from."""

    def __init__(self, files: list[Path], n: int) -> None:
        self.files, self.n, self.too_short = files, n, 0
        hashes, owners = [], []
        for i, path in enumerate(files):
            for text in evaluation_texts(path):
                h = window_hashes(words(text), n)
                self.too_short += h.size == 0 and bool(text.strip())
                hashes.append(h)
                owners.append(np.full(h.size, i, dtype=np.int32))
        hashes_all = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
        owners_all = np.concatenate(owners) if owners else np.empty(0, dtype=np.int32)
        order = np.argsort(hashes_all, kind="stable")
        self.hashes, self.owners = hashes_all[order], owners_all[order]

    @property
    def windows(self) -> int:
        return int(np.unique(self.hashes).size)

    def overlap(self, text: str) -> dict | None:
        """The shared windows of `text`: how many, the first one's words and its file."""
        text_words = words(text)
        h = window_hashes(text_words, self.n)
        if h.size == 0 or self.hashes.size == 0:
            return None
        at = np.minimum(np.searchsorted(self.hashes, h), self.hashes.size - 1)
        shared = np.flatnonzero(self.hashes[at] == h)
        if shared.size == 0:
            return None
        first = int(shared[0])
        return {"windows": int(shared.size),
                "against": str(self.files[int(self.owners[at[first]])]),
                "words": " ".join(text_words[first:first + self.n])}


def training_texts(documents: Path, synth: Path | None) -> Iterator[tuple[str, str, str, str]]:
    """(kind, id, source, text) of every document and every synthetic training sample (each
    message of a chat, joined)."""
    for batch in iter_batches(documents / "documents", columns=["id", "source", "text"]):
        for row in batch.to_pylist():
            yield "document", row["id"], row["source"], row["text"]
    if synth is None:
        return
    for batch in iter_batches(synth / "samples", columns=["id", "source", "messages", "split"]):
        batch = batch.filter(pc.equal(batch.column("split"), "train"))
        for row in batch.to_pylist():
            yield "sample", row["id"], row["source"], "\n".join(
                m["content"] for m in row["messages"])


def _train_samples(synth: Path) -> int:
    return sum(pc.sum(pc.equal(b.column("split"), "train")).as_py() or 0
               for b in iter_batches(synth / "samples", columns=["split"]))


def run(ctx: Context) -> DecontamManifest:
    """`fournil decontam` and bake: the run's training texts against `decontam.against`."""
    config: DecontamConfig = ctx.recipe.decontam
    against = [Path(p) for p in ctx.option("against", [])] or [
        ctx.recipe.resolve(p) for p in config.against]
    synth = ctx.folder("synth", "synth") if ctx.recipe.runs("synth") or ctx.option("synth") \
        else None
    return run_decontam(ctx.documents(), synth, against, ctx.out("decontam"), config)


def run_decontam(documents: Path, synth: Path | None, against: list[Path], out_dir: Path,
                 config: DecontamConfig) -> DecontamManifest:
    if not against:
        raise ValueError("decontam: no evaluation files to check against (decontam.against, "
                         "or --against)")
    files = evaluation_files(against)
    inputs = {"documents": upstream_hash(documents), "against": hash_files(files)}
    if synth is not None:
        inputs["synth"] = upstream_hash(synth)
    stage = Stage("decontam", out_dir, inputs=inputs,
                  params={"ngram": config.ngram, "on_overlap": config.on_overlap})
    if manifest := stage.done():
        return manifest
    work = stage.start()
    index = WindowIndex(files, config.ngram)
    checked = {"document": 0, "sample": 0}
    overlapping = {"document": 0, "sample": 0}
    total = count_rows(documents / "documents") + (
        _train_samples(synth) if synth is not None else 0)
    with (work / "overlaps.jsonl").open("w", encoding="utf-8") as out, \
            tqdm(total=total, desc="decontam", unit=" texts", mininterval=1.0) as bar:
        for kind, text_id, source, text in training_texts(documents, synth):
            checked[kind] += 1
            bar.update()
            if found := index.overlap(text):
                overlapping[kind] += 1
                out.write(json.dumps({"kind": kind, "id": text_id, "source": source, **found},
                                     ensure_ascii=False) + "\n")
    found_any = overlapping["document"] + overlapping["sample"]
    if found_any and config.on_overlap == "fail":
        first = json.loads((work / "overlaps.jsonl").open(encoding="utf-8").readline())
        raise ValueError(
            f"decontam: {found_any} training texts share a {config.ngram}-word window with the "
            f"evaluation files, e.g. {first['kind']} {first['id']} ({first['source']}) with "
            f"{first['against']}: \"{first['words']}\". All of them: "
            f"{work / 'overlaps.jsonl'}. Remove them, or set decontam.on_overlap = \"report\"")
    return stage.finish({
        "documents": checked["document"], "samples": checked["sample"],
        "against_files": len(files), "against_windows": index.windows,
        "too_short": index.too_short,
        "overlapping_documents": overlapping["document"],
        "overlapping_samples": overlapping["sample"]}, against=[str(p) for p in files],
        ngram=config.ngram)
