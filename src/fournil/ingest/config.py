"""The ingest stage's settings (`[ingest]`): the sources and how their records are sharded.

Also the one list of input formats, which the readers, the recipe check and `fournil ingest
--format` all take from here. Standard library only, so that loading a recipe stays light.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from fournil.core.validation import check as _check

FORMATS = ("jsonl", "json", "parquet", "txt", "pdf", "html")
SUFFIXES = {  # how `format = "auto"` tells them apart
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson"),
    "json": (".json",),
    "parquet": (".parquet",),
    "txt": (".txt", ".md"),
    "pdf": (".pdf",),
    "html": (".html", ".htm"),
}


@dataclass
class SourceSpec:
    """One input of the ingest stage: a file or folder, with its provenance."""

    path: str
    name: str | None = None  # the records' `source`; a folder's sidecar may give it
    license: str | None = None  # raw or SPDX; normalised at ingest
    format: str | None = None  # auto or one of FORMATS (unset: the sidecar's)
    language: str | None = None
    text_field: str | None = None  # unset: the sidecar's, else "text"
    id_field: str | None = None
    encoding: str | None = None  # text and HTML files: this encoding, not detection

    def validate(self, key: str) -> None:
        _check(self.format in (None, "auto", *FORMATS), f"{key}.format",
               f"unknown format {self.format!r} (auto, {', '.join(FORMATS)})")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                _check(False, f"{key}.encoding", f"unknown encoding {self.encoding!r} "
                       "(e.g. utf-8, cp1252, latin-1, utf-16)")


@dataclass
class IngestConfig:
    sources: list[SourceSpec] = field(default_factory=list)
    rows_per_shard: int = 50_000
    strict: bool = False  # stop at the first damaged file instead of rejecting it and going on

    def validate(self, key: str) -> None:
        _check(len(self.sources) > 0, f"{key}.sources", "at least one source is needed")
        _check(self.rows_per_shard > 0, f"{key}.rows_per_shard", "must be > 0")
        for i, source in enumerate(self.sources):
            source.validate(f"{key}.sources[{i}]")
