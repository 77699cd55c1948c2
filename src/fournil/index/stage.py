"""The index stage: the run's curated documents cut into passages with their provenance, and
a French BM25 index over them, for `fournil ask` and `fournil serve --index`."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from pathlib import Path
from typing import TypedDict

from fournil.core.shards import iter_records
from fournil.core.stage import Context, Manifest, Stage, upstream_hash
from fournil.index.analyzer import ANALYZER_ID
from fournil.index.config import IndexConfig
from fournil.index.passages import PROVENANCE, document_passages
from fournil.index.store import BACKENDS, FORMAT_VERSION, save_index


class SourceCounts(TypedDict):
    documents: int
    passages: int


class IndexCounts(TypedDict):
    documents: int  # curated documents read
    passages: int
    empty_documents: int  # documents with no text to cut (they have no passage)
    chars: int  # in passages
    bytes: int  # of the index on disk
    by_source: dict[str, SourceCounts]
    by_license: dict[str, int]  # passages per license


class IndexManifest(Manifest):
    counts: IndexCounts
    backend: str
    analyzer: str
    format_version: int


def run(ctx: Context) -> IndexManifest:
    """`fournil index` and bake: the run's documents (curated, or corrected when the recipe
    runs the correct stage), indexed."""
    return build_index(ctx.documents(), ctx.out("index"), ctx.recipe.index)


def build_index(documents_dir: Path, out_dir: Path, config: IndexConfig) -> IndexManifest:
    """The passages of the documents of a curate (or correct) stage folder, indexed into
    `out_dir` (built in `<out_dir>.partial/`, renamed when complete)."""
    documents = Path(documents_dir) / "documents"
    stage = Stage("index", out_dir, inputs={"documents": upstream_hash(documents_dir)},
                  params={**dataclasses.asdict(config), "format_version": FORMAT_VERSION,
                          "analyzer": ANALYZER_ID})
    if manifest := stage.done():
        return manifest
    work = stage.start()
    passages, empty = [], 0
    by_source: dict[str, Counter] = defaultdict(Counter)
    for doc in iter_records(documents, columns=["id", "text", *PROVENANCE]):
        cut = document_passages(doc, config.min_chars, config.max_chars)
        empty += not cut
        by_source[doc["source"]].update(documents=1, passages=len(cut))
        passages += cut
    retriever = BACKENDS[config.backend]()
    retriever.build(passages)
    save_index(retriever, work, settings=dataclasses.asdict(config))
    size = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    return stage.finish({
        "documents": sum(c["documents"] for c in by_source.values()),
        "passages": len(passages),
        "empty_documents": empty,
        "chars": sum(len(p.text) for p in passages),
        "bytes": size,
        "by_source": {s: {"documents": c["documents"], "passages": c["passages"]}
                      for s, c in sorted(by_source.items())},
        "by_license": dict(sorted(Counter(p.license for p in passages).items())),
    }, backend=config.backend, analyzer=ANALYZER_ID, format_version=FORMAT_VERSION)

