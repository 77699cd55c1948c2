"""The curate stage: per-document filters in parallel, then corpus-wide deduplication.

1. The input shards' row groups are bundled into tasks of about `task_rows` documents. Each
   task runs, on local processes or on Ray, the per-document pipeline: license gate, Unicode
   normalisation, minimum length, then `filters.annotate` (PII scrub, language ID, quality
   signals and rules, OCR-noise flag). It writes its kept and rejected records, the kept
   ones with their exact-dedup digest and MinHash signature.
2. The driver deduplicates across the whole corpus in input order, reading only ids and
   fingerprints: exact duplicates first, then MinHash-LSH near-duplicates. The first
   document of a cluster is kept; the others are rejected with `dup_of` naming it.
3. The final pass writes `documents/` and `rejected/` and counts everything per source into
   the manifest and into `report.md` / `report.json`, with examples of each reason.

Every record read ends up in `documents/` or in `rejected/` with a reason, and the counts
add up (`kept + sum(rejected) == read`), overall and per source. A task is a pure function
of its rows and the config, so the kept set is the same on any executor and any number of
workers. A task's files appear only when complete (temp name, then rename), so an
interrupted curate started again skips the tasks that had finished.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fournil.core.executors import make_executor, resumable_dir
from fournil.core.settings import RUN_SETTINGS as EXECUTOR_SETTINGS
from fournil.core.shards import ShardWriter, shard_paths
from fournil.core.stage import Context, Manifest, Stage, upstream_hash
from fournil.curate.config import CurateConfig
from fournil.curate.dedup import ExactDedup, exact_digest
from fournil.curate.filters import SIGNAL_FIELDS, annotate
from fournil.curate.minhash import find_duplicates, signature
from fournil.curate.normalize import normalize_text
from fournil.curate.report import CurateCounts, Tally, write_report
from fournil.provenance.licenses import check_license
from fournil.provenance.records import DOC_SCHEMA, rejected_schema, with_columns

CURATED_SCHEMA = with_columns(DOC_SCHEMA, [pa.field("n_chars", pa.int64()),
                                           pa.field("dup_of", pa.string()), *SIGNAL_FIELDS])
REJECTED_SCHEMA = rejected_schema(CURATED_SCHEMA)
# what a task adds to its kept records for the driver's dedup; never in the stage output
FINGERPRINTS = [pa.field("_digest", pa.binary(16)), pa.field("_minhash", pa.list_(pa.uint32()))]
TASK_KEPT_SCHEMA = with_columns(CURATED_SCHEMA, FINGERPRINTS)
# where the work runs and in what units, never its result: out of the stage's fingerprint
RUN_SETTINGS = (*EXECUTOR_SETTINGS, "task_rows")


class CurateManifest(Manifest):
    counts: CurateCounts
    allowed_licenses: list[str]  # the license policy the gate applied (SPDX ids)
    executor: str
    tasks: int


def run(ctx: Context) -> CurateManifest:
    """`fournil curate` and bake: the run's ingested documents curated into its curate folder,
    on the executor the recipe (or the verb's --executor/--workers/--ray-address) names."""
    overrides = {k: ctx.options[k] for k in EXECUTOR_SETTINGS if ctx.option(k) is not None}
    config = dataclasses.replace(ctx.recipe.curate, **overrides)
    config.validate("curate")
    return run_curate(ctx.folder("ingest", "input"), ctx.out("curate"), config,
                      ctx.recipe.ingest.rows_per_shard)


@dataclasses.dataclass(frozen=True)
class Task:
    index: int
    shard: str
    row_groups: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{Path(self.shard).name} row groups {self.row_groups[0]}-{self.row_groups[-1]}"


def plan_tasks(documents_dir: Path, task_rows: int) -> list[Task]:
    """The input shards' row groups, bundled into tasks of at least `task_rows` rows (or
    what is left of a shard)."""
    tasks: list[Task] = []
    for path in shard_paths(documents_dir):
        meta = pq.ParquetFile(path).metadata
        groups: list[int] = []
        rows = 0
        for i in range(meta.num_row_groups):
            groups.append(i)
            rows += meta.row_group(i).num_rows
            if rows >= task_rows:
                tasks.append(Task(len(tasks), str(path), tuple(groups)))
                groups, rows = [], 0
        if groups:
            tasks.append(Task(len(tasks), str(path), tuple(groups)))
    return tasks


def curate_record(record: dict, config: CurateConfig) -> str | None:
    """The per-document pipeline on one record, in place; None to keep it, else the reason."""
    record.update({f.name: None for f in SIGNAL_FIELDS})
    record["n_chars"], record["dup_of"] = len(record["text"] or ""), None
    reason = check_license(record["license"], config.allowed_licenses)
    if reason:
        return reason
    record["text"] = normalize_text(record["text"] or "", config.unicode_form)
    record["n_chars"] = len(record["text"])
    if not record["text"]:
        return "empty"
    if record["n_chars"] < config.min_chars:
        return "quality:too_short"
    return annotate(record, config.quality)


def _task_path(task_dir: Path, index: int, kind: str) -> Path:
    return task_dir / f"task-{index:06d}.{kind}.parquet"


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def curate_task(task: Task, config: CurateConfig, task_dir: str) -> int:
    """Curate one task's rows into `task-N.rejected.parquet` and `task-N.kept.parquet` (the
    latter written last: its presence means the task is done). Returns the rows read."""
    table = pq.ParquetFile(task.shard).read_row_groups(list(task.row_groups))
    kept, rejected = [], []
    near = config.near_dedup
    for record in table.to_pylist():
        reason = curate_record(record, config)
        if reason is not None:
            rejected.append({**record, "stage": "curate", "reason": reason})
            continue
        record["_digest"] = exact_digest(record["text"])
        record["_minhash"] = signature(record["text"], near) if near.enabled else None
        kept.append(record)
    out = Path(task_dir)
    _write_atomic(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA),
                  _task_path(out, task.index, "rejected"))
    _write_atomic(pa.Table.from_pylist(kept, schema=TASK_KEPT_SCHEMA),
                  _task_path(out, task.index, "kept"))
    return len(table)


def _curate_task(args: tuple[Task, CurateConfig, str]) -> int:
    return curate_task(*args)


def find_all_duplicates(task_dir: Path, tasks: list[Task],
                        config: CurateConfig) -> dict[str, tuple[str, str]]:
    """{dropped id: (reason, kept id)} over the whole corpus; the first occurrence is kept."""
    dropped: dict[str, tuple[str, str]] = {}
    exact = ExactDedup()
    unique_ids: list[str] = []
    unique_sigs: list[np.ndarray] = []
    for task in tasks:
        table = pq.read_table(_task_path(task_dir, task.index, "kept"),
                              columns=["id", "_digest", "_minhash"])
        sigs = table.column("_minhash")
        for k, (doc_id, digest) in enumerate(zip(table.column("id").to_pylist(),
                                                 table.column("_digest").to_pylist(),
                                                 strict=True)):
            if first := exact.check(doc_id, digest):
                dropped[doc_id] = ("dup:exact", first)
            elif config.near_dedup.enabled:
                unique_ids.append(doc_id)
                unique_sigs.append(sigs[k].values.to_numpy())
    if len(unique_ids) > 1:
        near = find_duplicates(unique_ids, np.stack(unique_sigs), config.near_dedup)
        dropped.update({doc_id: ("dup:minhash", keeper) for doc_id, keeper in near.items()})
    return dropped


def run_curate(ingest_dir: Path, out_dir: Path, config: CurateConfig,
               rows_per_shard: int = 50_000) -> CurateManifest:
    """Curate the documents of a completed ingest stage into `out_dir`."""
    documents_dir = Path(ingest_dir) / "documents"
    params = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_SETTINGS}
    stage = Stage("curate", out_dir, inputs={"ingest": upstream_hash(ingest_dir)}, params=params)
    if manifest := stage.done():
        return manifest
    work = stage.start(resume=True)
    tasks = plan_tasks(documents_dir, config.task_rows)
    task_dir = resumable_dir(work / "tasks", [dataclasses.asdict(t) for t in tasks])
    todo = [t for t in tasks if not _task_path(task_dir, t.index, "kept").exists()]
    with make_executor(config.executor, config.workers, config.ray_address) as executor:
        executor.map(_curate_task, [(t, config, str(task_dir)) for t in todo],
                     labels=[t.label for t in todo], desc="curate")
    dropped = find_all_duplicates(task_dir, tasks, config)

    tally = Tally()
    fingerprints = [f.name for f in FINGERPRINTS]
    with ShardWriter(work / "documents", CURATED_SCHEMA, rows_per_shard=rows_per_shard) as docs, \
            ShardWriter(work / "rejected", REJECTED_SCHEMA,
                        rows_per_shard=rows_per_shard) as rejects:
        for task in tasks:
            for record in pq.read_table(_task_path(task_dir, task.index, "rejected")).to_pylist():
                tally.read(record)
                tally.reject(record, record["reason"])
                rejects.write(record)
            kept = pq.read_table(_task_path(task_dir, task.index, "kept")).drop(fingerprints)
            for record in kept.to_pylist():
                tally.read(record)
                if record["id"] in dropped:
                    reason, record["dup_of"] = dropped[record["id"]]
                    tally.reject(record, reason)
                    rejects.write({**record, "stage": "curate", "reason": reason})
                else:
                    tally.keep(record)
                    docs.write(record)
    shutil.rmtree(task_dir)
    counts = tally.counts()
    if counts["kept"] + sum(counts["rejected"].values()) != counts["read"]:
        raise AssertionError(f"curate lost records: {counts}")
    write_report(work, counts, tally.examples)
    return stage.finish(counts, allowed_licenses=list(config.allowed_licenses),
                        executor=config.executor, tasks=len(tasks))
