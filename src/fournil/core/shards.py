"""Parquet shard IO. A shard is only ever visible under its final name once complete.

Shards are written as `<name>.parquet.tmp` and renamed when closed, so a killed run never
leaves a half-written file that a reader would take as valid (readers ignore `*.tmp`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class ShardWriter:
    """Writes records (dicts) into numbered Parquet shards of at most `rows_per_shard` rows."""

    def __init__(self, directory: str | Path, schema: pa.Schema, prefix: str = "part",
                 rows_per_shard: int = 50_000, batch_rows: int = 1_000):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema, self.prefix = schema, prefix
        self.rows_per_shard, self.batch_rows = rows_per_shard, batch_rows
        self.shard_index, self.rows_in_shard, self.rows_written = 0, 0, 0
        self.paths: list[Path] = []
        self._buffer: list[dict] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None

    def write(self, record: dict) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        while self._buffer:
            if self._writer is None:
                self._open()
            room = self.rows_per_shard - self.rows_in_shard
            chunk, self._buffer = self._buffer[:room], self._buffer[room:]
            self._writer.write_table(pa.Table.from_pylist(chunk, schema=self.schema))
            self.rows_in_shard += len(chunk)
            self.rows_written += len(chunk)
            if self.rows_in_shard >= self.rows_per_shard:
                self._close_shard()

    def _open(self) -> None:
        final = self.directory / f"{self.prefix}-{self.shard_index:05d}.parquet"
        self._tmp = final.with_name(final.name + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")

    def _close_shard(self) -> None:
        self._writer.close()
        final = self._tmp.with_name(self._tmp.name[: -len(".tmp")])
        os.replace(self._tmp, final)
        self.paths.append(final)
        self._writer, self._tmp = None, None
        self.shard_index += 1
        self.rows_in_shard = 0

    def close(self) -> list[Path]:
        self._flush()
        if self._writer is not None:
            self._close_shard()
        return self.paths

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:  # leave nothing that looks like output behind
            self._writer.close()
            self._tmp.unlink(missing_ok=True)


def shard_paths(directory: str | Path) -> list[Path]:
    """Complete shards in a directory, in order (temp files are never listed)."""
    return sorted(Path(directory).glob("*.parquet"))


def iter_batches(directory: str | Path, columns: list[str] | None = None,
                 batch_size: int = 1_000) -> Iterator[pa.RecordBatch]:
    for path in shard_paths(directory):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)


def iter_records(directory: str | Path, columns: list[str] | None = None) -> Iterator[dict]:
    for batch in iter_batches(directory, columns):
        yield from batch.to_pylist()


def count_rows(directory: str | Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in shard_paths(directory))
