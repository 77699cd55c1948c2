"""Flat token shards: little-endian uint16/uint32 arrays plus a Parquet index of documents.

A split folder holds `shard-00000.bin` (the tokens) and `shard-00000.docs.parquet` (one row
per document: id, source, license, start, n_tokens, n_bytes). Shards end on document
boundaries; every document starts with `<|endoftext|>`. Files appear under their final
names only when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

INDEX_SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("source", pa.string()),
    pa.field("license", pa.string()), pa.field("start", pa.int64()),
    pa.field("n_tokens", pa.int64()), pa.field("n_bytes", pa.int64()),
])


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class TokenShardWriter:
    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int = 50_000_000):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype, self.shard_tokens = dtype, shard_tokens
        self.shard_index = 0
        self._arrays: list[np.ndarray] = []
        self._rows: list[dict] = []
        self._n = 0

    def add(self, ids: list[int], doc: dict, n_bytes: int) -> None:
        self._rows.append({"id": doc["id"], "source": doc["source"], "license": doc["license"],
                           "start": self._n, "n_tokens": len(ids), "n_bytes": n_bytes})
        self._arrays.append(np.asarray(ids, dtype=self.dtype))
        self._n += len(ids)
        if self._n >= self.shard_tokens:
            self._write_shard()

    def _write_shard(self) -> None:
        if not self._arrays:
            return
        stem = self.directory / f"shard-{self.shard_index:05d}"
        tmp_bin = stem.with_suffix(".bin.tmp")
        np.concatenate(self._arrays).tofile(tmp_bin)
        tmp_idx = stem.with_suffix(".docs.parquet.tmp")
        pq.write_table(pa.Table.from_pylist(self._rows, schema=INDEX_SCHEMA), tmp_idx)
        os.replace(tmp_idx, stem.with_suffix(".docs.parquet"))
        os.replace(tmp_bin, stem.with_suffix(".bin"))
        self.shard_index += 1
        self._arrays, self._rows, self._n = [], [], 0

    def close(self) -> None:
        self._write_shard()
        (self.directory / "dtype.json").write_text(json.dumps({"dtype": self.dtype.str}))


class TokenDataset:
    """All shards of a split as one virtual token array (memory-mapped, read on demand)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta = self.directory / "dtype.json"
        if not meta.exists():
            raise FileNotFoundError(f"{self.directory}: not a token split (no dtype.json)")
        self.dtype = np.dtype(json.loads(meta.read_text())["dtype"])
        paths = sorted(self.directory.glob("shard-*.bin"))
        self.shards = [np.memmap(p, dtype=self.dtype, mode="r") for p in paths]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) as int64, across shard boundaries."""
        out, pos, end = [], start, start + length
        shard = int(np.searchsorted(self.offsets, start, side="right") - 1)
        while pos < end:
            lo = pos - self.offsets[shard]
            take = min(end - pos, len(self.shards[shard]) - lo)
            out.append(self.shards[shard][lo: lo + take])
            pos += take
            shard += 1
        return np.concatenate(out).astype(np.int64)

    def documents(self) -> pa.Table:
        """The document index, with `start` made global across shards."""
        tables = []
        for i, path in enumerate(sorted(self.directory.glob("shard-*.docs.parquet"))):
            t = pq.read_table(path)
            start = pa.compute.add(t.column("start"), int(self.offsets[i]))
            tables.append(t.set_column(t.schema.get_field_index("start"), "start", start))
        return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()
