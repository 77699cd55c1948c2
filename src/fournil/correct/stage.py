"""The correct stage: the OCR-flagged documents of the curate stage, corrected by a model.

1. The curated documents are planned into chunks of consecutive rows holding about
   `chunk_chars` characters of flagged text (the unit a resumed run skips).
2. In each chunk, every flagged document (`ocr_flag`) is cut into pieces of at most
   `piece_chars` characters (`pieces.py`), the pieces are corrected by the model as
   `fournil.eval.corrector` does it for the OCR evaluation (copy-biased decoding and the
   confidence rule, the same settings measure and run), and put back together with the
   whitespace between them as it was. The chunk is written whole (temp name, then rename).
3. The chunks are gathered into `documents/`, in input order. Every record read is written:
   an unflagged one as it was; a flagged one with its corrected text, `n_chars` updated, the
   sha256 of its original text (`ocr_original_sha256`) and the model that corrected it
   (`ocr_corrected_by`). A piece whose prompt does not fit the model's context is kept as it
   was and counted.

Throughput is in pages per hour, a page being 2,000 characters of flagged input (about a
printed page of a book), over the time spent answering.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import TypedDict

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from fournil.core.executors import resumable_dir
from fournil.core.shards import ShardWriter, shard_paths
from fournil.core.stage import Context, Manifest, Stage, hash_files, upstream_hash
from fournil.core.validation import RecipeError
from fournil.correct import pieces as cut
from fournil.correct.config import CorrectConfig
from fournil.eval.corrector import Correction, Corrector
from fournil.eval.lm import LanguageModel, ModelSpec, load_lm
from fournil.model.hf import is_fournil_model

log = logging.getLogger("fournil")

PAGE_CHARS = 2_000  # a page, for throughput: about a printed page of a book
PROVENANCE = [pa.field("ocr_original_sha256", pa.string()),
              pa.field("ocr_corrected_by", pa.string())]


class CorrectCounts(TypedDict):
    read: int
    written: int
    flagged: int  # documents sent to the model
    changed: int  # of those, documents whose text the model changed
    pieces: int
    pieces_changed: int
    pieces_kept_input: int  # answers set aside by the confidence rule
    pieces_too_long: int  # pieces whose prompt did not fit the context, kept as they were
    flagged_chars: int
    pages: float  # flagged characters / 2,000
    seconds: float  # spent answering, over every run that made a chunk
    pages_per_hour: float


class CorrectionModel(TypedDict):
    label: str
    path: str  # absolute
    engine: str  # what ran it: fournil, transformers or llama.cpp
    sha256: str  # of its files (hash_files)


class CorrectManifest(Manifest):
    counts: CorrectCounts
    model: CorrectionModel
    corrected_by: str  # what `ocr_corrected_by` says


def run(ctx: Context) -> CorrectManifest | None:
    """`fournil correct` and bake: the run's curated documents, the flagged ones corrected
    with the recipe's (or the verb's --model) correction model."""
    config = ctx.recipe.correct
    model = ctx.option("model") or config.model
    if not model:
        raise RecipeError("correct.model: no correction model (a model folder or a .gguf "
                          "file); set it in the recipe or pass --model")
    spec = ModelSpec.parse(model)
    # recipe paths are relative to the recipe, the verb's to where it runs; the manifest
    # records the model wherever the command ran
    path = spec.path.absolute() if ctx.option("model") else ctx.recipe.resolve(str(spec.path))
    spec = dataclasses.replace(spec, path=path)
    return run_correct(ctx.folder("curate", "input"), ctx.out("correct"), spec, config,
                       stop_after=ctx.option("stop_after"))


def engine_of(spec: ModelSpec) -> str:
    """What `load_lm` runs the model with, for the manifest (read off the files, so that a
    run resumed with nothing left to correct says it too)."""
    if spec.path.suffix == ".gguf":
        return "llama.cpp"
    if spec.engine == "auto":
        return "fournil" if is_fournil_model(spec.path) else "transformers"
    return "transformers" if spec.engine == "hf" else spec.engine


def model_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def plan_chunks(documents: Path, chunk_chars: int) -> list[tuple[str, int, int]]:
    """(shard name, first row, rows) of each chunk: consecutive rows of one shard holding
    about `chunk_chars` characters of flagged text (at least one row)."""
    chunks = []
    for shard in shard_paths(documents):
        table = pq.read_table(shard, columns=["text", "ocr_flag"])
        start, chars = 0, 0
        for row, (text, flag) in enumerate(zip(table.column("text").to_pylist(),
                                               table.column("ocr_flag").to_pylist(),
                                               strict=True)):
            chars += len(text) if flag else 0
            if chars >= chunk_chars:
                chunks.append((shard.name, start, row + 1 - start))
                start, chars = row + 1, 0
        if start < table.num_rows:
            chunks.append((shard.name, start, table.num_rows - start))
    return chunks


def run_correct(curate_dir: Path, out_dir: Path, spec: ModelSpec, config: CorrectConfig,
                stop_after: int | None = None, lm: LanguageModel | None = None
                ) -> CorrectManifest | None:
    """The stage into `out_dir`. `stop_after`: make at most that many chunks and return None
    (the next call resumes), as a kill would. `lm`: the model of `spec`, already loaded (a
    bench that sets its threads, or runs several stages with it, loads it once)."""
    documents = Path(curate_dir) / "documents"
    shards = shard_paths(documents)
    schema = pq.read_schema(shards[0]) if shards else None
    if schema is not None and "ocr_flag" not in schema.names:
        raise RecipeError(f"{shards[0]}: no ocr_flag column: not curated documents (the "
                          "curate stage flags OCR noise)")
    if not spec.path.exists():
        raise FileNotFoundError(f"{spec.path}: no such model folder or GGUF file")
    model_hash = hash_files(model_files(spec.path))
    corrected_by = f"{spec.path.name} sha256:{model_hash[:16]}"
    params = {k: v for k, v in dataclasses.asdict(config).items()
              if k not in ("model", "batch", "device", "chunk_chars")}  # how, not what
    stage = Stage("correct", out_dir, params={**params, "engine": spec.engine},
                  inputs={"curate": upstream_hash(curate_dir), "model": model_hash})
    if manifest := stage.done():
        return manifest
    work = stage.start(resume=True)
    chunk_dir = work / "chunks"
    plan = plan_chunks(documents, config.chunk_chars)
    resumable_dir(chunk_dir, plan)
    todo = [(i, c) for i, c in enumerate(plan) if not (chunk_dir / _chunk_name(i)).exists()]
    if stop_after is not None:
        todo = todo[:stop_after]
    log.info("correct: %d chunks, %d left to make, with %s", len(plan), len(todo), spec.path)
    if todo:
        lm = lm or load_lm(spec, config.device)
        corrector = Corrector(lm, _correction(config), max_new_tokens=config.max_new_tokens)
        out_schema = _with_provenance(schema)
        flagged_chars = sum(_flagged_chars(documents / shard, start, n)
                            for _, (shard, start, n) in todo)
        with tqdm(total=flagged_chars / PAGE_CHARS, desc="correct", unit="page",
                  mininterval=5.0, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} pages "
                  "[{elapsed}<{remaining}, {rate_fmt}]") as bar:
            for index, (shard, start, n) in todo:
                rows = pq.read_table(documents / shard).slice(start, n).to_pylist()
                stats = _correct_rows(rows, corrector, corrected_by, config, bar)
                _write_chunk(chunk_dir / _chunk_name(index), rows, out_schema, stats)
    if any(not (chunk_dir / _chunk_name(i)).exists() for i in range(len(plan))):
        return None  # stopped early: the next call resumes
    counts = _gather(work, chunk_dir, len(plan))
    shutil.rmtree(chunk_dir)
    model = CorrectionModel(label=spec.label, path=str(spec.path.absolute()),
                            engine=engine_of(spec), sha256=model_hash)
    return stage.finish(counts, model=model, corrected_by=corrected_by)


def _correction(config: CorrectConfig) -> Correction:
    return Correction(margin=config.margin, span=config.span,
                      max_change=config.max_change or None, word_edit=config.word_edit or None)


def _chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.parquet"


def _flagged_chars(shard: Path, start: int, n: int) -> int:
    table = pq.read_table(shard, columns=["text", "ocr_flag"]).slice(start, n)
    return sum(len(t) for t, f in zip(table.column("text").to_pylist(),
                                      table.column("ocr_flag").to_pylist(), strict=True) if f)


def _with_provenance(schema: pa.Schema) -> pa.Schema:
    for field in PROVENANCE:
        if field.name not in schema.names:
            schema = schema.append(field)
    return schema


def _correct_rows(rows: list[dict], corrector: Corrector, corrected_by: str,
                  config: CorrectConfig, bar: tqdm) -> Counter:
    """Corrects the flagged rows in place (text, n_chars, provenance); the chunk's counts."""
    stats: Counter = Counter(read=len(rows))
    jobs = []  # (row, spans, [piece index in `todo`])
    todo: list[str] = []
    for row in rows:
        row.setdefault("ocr_original_sha256", None)
        row.setdefault("ocr_corrected_by", None)
        if not row.get("ocr_flag"):
            continue
        spans = cut.split(row["text"], config.piece_chars)
        slots = []
        for start, end in spans:
            piece = row["text"][start:end]
            if corrector.fits(piece):
                slots.append(len(todo))
                todo.append(piece)
            else:
                slots.append(None)
                stats["pieces_too_long"] += 1
        jobs.append((row, spans, slots))
        stats["flagged"] += 1
        stats["flagged_chars"] += len(row["text"])
        stats["pieces"] += len(spans)
    answers: list[str] = []
    started = time.perf_counter()
    for first in range(0, len(todo), config.batch):
        batch = todo[first:first + config.batch]
        raws = corrector.raw(batch)
        for raw, piece in zip(raws, batch, strict=True):
            answer = corrector.guard(raw, piece)
            stats["pieces_kept_input"] += answer != raw
            stats["pieces_changed"] += answer != piece
            answers.append(answer)
        bar.update(sum(len(p) for p in batch) / PAGE_CHARS)
    stats["seconds_x1000"] = round(1000 * (time.perf_counter() - started))
    for row, spans, slots in jobs:
        original = row["text"]
        texts = [answers[s] if s is not None else original[a:b]
                 for s, (a, b) in zip(slots, spans, strict=True)]
        row["text"] = cut.join(original, spans, texts)
        if "n_chars" in row:
            row["n_chars"] = len(row["text"])
        row["ocr_original_sha256"] = hashlib.sha256(original.encode("utf-8")).hexdigest()
        row["ocr_corrected_by"] = corrected_by
        stats["changed"] += row["text"] != original
    return stats


def _write_chunk(path: Path, rows: list[dict], schema: pa.Schema, stats: Counter) -> None:
    """The chunk's rows and, in the file's metadata, its counts: written whole."""
    table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(
        {**(schema.metadata or {}), b"fournil_correct": json.dumps(dict(stats)).encode()})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def _gather(work: Path, chunk_dir: Path, n_chunks: int) -> CorrectCounts:
    """Chunks -> documents/ in input order; the counts."""
    total: Counter = Counter()
    writer = None
    for index in range(n_chunks):
        path = chunk_dir / _chunk_name(index)
        table = pq.read_table(path)
        total.update(json.loads(table.schema.metadata[b"fournil_correct"]))
        table = table.replace_schema_metadata(None)
        if writer is None:
            writer = ShardWriter(work / "documents", table.schema)
        for row in table.to_pylist():
            writer.write(row)
        total["written"] += table.num_rows
    if writer is not None:
        writer.close()
    seconds = total["seconds_x1000"] / 1000
    pages = total["flagged_chars"] / PAGE_CHARS
    return {"read": total["read"], "written": total["written"], "flagged": total["flagged"],
            "changed": total["changed"], "pieces": total["pieces"],
            "pieces_changed": total["pieces_changed"],
            "pieces_kept_input": total["pieces_kept_input"],
            "pieces_too_long": total["pieces_too_long"],
            "flagged_chars": total["flagged_chars"], "pages": round(pages, 2),
            "seconds": round(seconds, 1),
            "pages_per_hour": round(3600 * pages / seconds, 1) if seconds else 0.0}
