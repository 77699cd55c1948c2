"""The ingest stage: every source's records into document shards, with their provenance.

Output (`<out_dir>/`): `documents/part-*.parquet` (DOC_SCHEMA), `rejected/part-*.parquet`
(the record plus `stage` and `reason`) and `manifest.json`, whose counts add up exactly:
`kept + sum(rejected.values()) == read`, where a damaged file counts as one read record (its
damage), beside the records read from it before the damage.

A damaged file (truncated, corrupt, unreadable, empty: see readers.py) does not stop the
stage: the manifest lists each (`damaged_files`: source, file, reason, error, where, and the
records read and kept from it before the damage) and the stage ends by logging that list.
With `strict`, the first damaged file stops the stage instead, with an `IngestError` naming
it. A configuration error (missing path, unknown format or encoding, bad source.toml, a text
field no record has) always raises `IngestError`. A stage that raises is not committed: its
`.partial` folder is never taken as output and is cleared by the next start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

from tqdm import tqdm

from fournil.core.shards import ShardWriter
from fournil.core.stage import Context, Manifest, Stage, hash_files
from fournil.ingest.config import SourceSpec
from fournil.ingest.readers import read_source
from fournil.ingest.records import Read
from fournil.ingest.sources import IngestError, Source, SourceDescription, resolve_source
from fournil.provenance.licenses import UNKNOWN
from fournil.provenance.records import DOC_SCHEMA, make_record, rejected_schema

log = logging.getLogger("fournil.ingest")

__all__ = ["IngestError", "IngestManifest", "run", "run_ingest"]


class SourceTally(TypedDict):
    read: int
    kept: int
    rejected: int
    chars: int  # of the kept documents' text


class IngestCounts(TypedDict):
    read: int  # records, and each damaged file as one
    kept: int
    rejected: dict[str, int]  # reason -> records
    by_source: dict[str, SourceTally]
    by_license: dict[str, int]  # SPDX id -> kept documents


class _DamagedFile(TypedDict):
    source: str
    file: str  # relative to the source
    path: str
    reason: str  # ingest:truncated, ingest:broken_parquet, ...
    error: str
    records_before: int  # read from the file before the damage
    kept_before: int


class DamagedFile(_DamagedFile, total=False):
    line: int  # where the damage is, when known
    row: int


class IngestManifest(Manifest):
    counts: IngestCounts
    sources: list[SourceDescription]
    damaged_files: list[DamagedFile]


def run(ctx: Context) -> IngestManifest:
    """`fournil ingest [PATHS]` and bake: the recipe's sources, or PATHS with the verb's
    provenance flags, into the run's ingest folder."""
    config = ctx.recipe.ingest
    sources = [SourceSpec(path=str(Path(p).resolve()), name=ctx.option("name"),
                          license=ctx.option("license"), format=ctx.option("format"),
                          language=ctx.option("language"), text_field=ctx.option("text_field"),
                          encoding=ctx.option("encoding"))
               for p in ctx.option("paths", [])] or config.sources
    for i, source in enumerate(sources):
        source.validate(f"ingest.sources[{i}]")
    return run_ingest(sources, ctx.out("ingest"), ctx.recipe.resolve, config.rows_per_shard,
                      strict=ctx.option("strict", config.strict))


def run_ingest(sources: list[SourceSpec], out_dir: Path, resolve: Callable[[str], Path],
               rows_per_shard: int = 50_000, strict: bool = False) -> IngestManifest:
    """Read every source into `out_dir`; skipped when inputs and parameters are unchanged.

    `resolve` turns a recipe path into a file system path (relative to the recipe).
    `strict` stops at the first damaged file rather than rejecting it; it is a check, not a
    parameter of the output, so an up-to-date output that lists damaged files fails it too.
    Returns the stage manifest.
    """
    resolved = [resolve_source(spec, resolve(spec.path)) for spec in sources]
    files = sorted({f for s in resolved for f in (*s.files, *s.config_files)})
    stage = Stage("ingest", Path(out_dir), inputs={"files": hash_files(files)},
                  params={"sources": [dataclasses.asdict(spec) for spec in sources],
                          "rows_per_shard": rows_per_shard})
    manifest = stage.done()  # same inputs and parameters: nothing to do
    if manifest is not None:
        if strict and manifest.get("damaged_files"):
            raise IngestError(_strict_message(manifest["damaged_files"][0]))
        return manifest
    partial = stage.start()
    counts = _Counts()
    damage = _Damage()
    warned: set[tuple[str, str | None]] = set()
    with ShardWriter(partial / "documents", DOC_SCHEMA, rows_per_shard=rows_per_shard) as docs, \
            ShardWriter(partial / "rejected", rejected_schema(),
                        rows_per_shard=rows_per_shard) as rejected, \
            tqdm(desc="ingest", unit=" docs", mininterval=1.0) as bar:
        for source in resolved:
            bar.set_postfix_str(source.name)
            for read in read_source(source):
                _warn_license(read, warned)
                if read.damaged:
                    entry = damage.add(source, read)
                    if strict:
                        raise IngestError(_strict_message(entry))
                reason = read.reason or counts.duplicate(read.record["id"])
                if reason is None:
                    docs.write(make_record(**read.record))
                else:
                    rejected.write({**read.record, "stage": "ingest", "reason": reason})
                counts.add(source.name, read.record, reason)
                damage.count(read.file, kept=reason is None)
                bar.update()
    manifest = stage.finish(counts.to_dict(), sources=[s.describe() for s in resolved],
                            damaged_files=damage.files)
    _log_summary(manifest["counts"], manifest["damaged_files"])
    return manifest


class _Damage:
    """The damaged files, with what was read and kept of each before its damage."""

    def __init__(self) -> None:
        self.files: list[dict] = []
        self._file: Path | None = None  # the file being read: its records come one after another
        self._read, self._kept = 0, 0

    def count(self, file: Path, kept: bool) -> None:
        if file != self._file:
            self._file, self._read, self._kept = file, 0, 0
        self._read += 1
        self._kept += kept

    def add(self, source: Source, read: Read) -> dict:
        before = (self._read, self._kept) if read.file == self._file else (0, 0)
        meta = json.loads(read.record["meta"])
        entry = {"source": source.name, "file": source.relative(read.file),
                 "path": str(read.file), "reason": read.reason, "error": read.error,
                 **{k: meta[k] for k in ("line", "row") if k in meta},
                 "records_before": before[0], "kept_before": before[1]}
        self.files.append(entry)
        return entry


def _strict_message(entry: dict) -> str:
    where = "".join(f": {k} {entry[k]}" for k in ("line", "row") if k in entry)
    return (f"{entry['path']}{where}: damaged file ({entry['reason']}: {entry['error']}); "
            "strict ingest stops at the first damaged file (drop --strict / ingest.strict to "
            "reject it and go on)")


class _Counts:
    """Per-reason, per-source and per-license tallies; kept + rejected == read by design."""

    def __init__(self) -> None:
        self.read, self.kept = 0, 0
        self.rejected: Counter[str] = Counter()
        self.by_source: dict[str, Counter[str]] = defaultdict(Counter)
        self.by_license: Counter[str] = Counter()
        self.seen_ids: set[str] = set()

    def duplicate(self, doc_id: str) -> str | None:
        """`ingest:duplicate_id` when a kept document already has this id (the first wins)."""
        if doc_id in self.seen_ids:
            return "ingest:duplicate_id"
        self.seen_ids.add(doc_id)
        return None

    def add(self, source: str, record: dict, reason: str | None) -> None:
        self.read += 1
        tally = self.by_source[source]
        tally["read"] += 1
        if reason is None:
            self.kept += 1
            tally["kept"] += 1
            tally["chars"] += len(record["text"])
            self.by_license[record["license"]] += 1
        else:
            self.rejected[reason] += 1
            tally["rejected"] += 1

    def to_dict(self) -> IngestCounts:
        assert self.kept + sum(self.rejected.values()) == self.read  # conservation
        return {
            "read": self.read,
            "kept": self.kept,
            "rejected": dict(sorted(self.rejected.items())),
            "by_source": {name: {"read": t["read"], "kept": t["kept"],
                                 "rejected": t["rejected"], "chars": t["chars"]}
                          for name, t in self.by_source.items()},
            "by_license": dict(sorted(self.by_license.items())),
        }


def _warn_license(read: Read, warned: set[tuple[str, str | None]]) -> None:
    """Warn once per file and raw string when a license is unknown (or not declared at all)."""
    if read.record["license"] != UNKNOWN:
        return
    key = (str(read.file), read.license_raw)
    if key in warned:
        return
    warned.add(key)
    if read.license_raw is None:
        log.warning("%s: no license declared (none in the record, none for source %r); "
                    "kept as %s, which the curate license gate rejects", read.where,
                    read.record["source"], UNKNOWN)
    else:
        log.warning("%s: unknown license %r; kept as %s, which the curate license gate "
                    "rejects (further records of this file with it are not reported)",
                    read.where, read.license_raw, UNKNOWN)


def _log_summary(counts: dict, damaged: list[dict]) -> None:
    rejected = ", ".join(f"{k}: {v}" for k, v in counts["rejected"].items()) or "none"
    log.info("ingest: %d read, %d kept, rejected: %s", counts["read"], counts["kept"], rejected)
    if damaged:
        lines = [f"  {d['path']}" + "".join(f": {k} {d[k]}" for k in ("line", "row") if k in d)
                 + f": {d['reason']}: {d['error']} ({d['kept_before']} record(s) kept before)"
                 for d in damaged]
        log.warning("ingest: %d damaged file(s), rejected with their reason (see "
                    "manifest.json damaged_files):\n%s", len(damaged), "\n".join(lines))
