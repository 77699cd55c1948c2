"""The index on disk: the passages (Parquet, row i = the backend's document i), the backend's
files, and `index.json`, fournil's own manifest of them, written last.

Neither bm25s nor tantivy notices a damaged file (bytes overwritten in the middle loaded
fine and returned other passages), and an index is only meaningful with the analyzer that
built it. So `index.json` records a format version, the analyzer's id, the libraries'
versions and the sha256 of every file, and `open_index` checks all of it before anything is
searched: an index from another format or analyzer, a missing or changed file, or a folder
without `index.json` (a build that never finished) is an error naming the folder, the file
and what is wrong, never a silently wrong answer; so is a stage's `<dir>.partial/` work
folder, whatever it holds. Hashing the ~5 MB of the bundled corpus's index takes ~10 ms.
"""

from __future__ import annotations

import json
from pathlib import Path

from fournil import __version__
from fournil.core.stage import sha256_file, write_json_atomic
from fournil.index.analyzer import ANALYZER_ID
from fournil.index.bm25 import BM25Retriever
from fournil.index.passages import read_passages, write_passages
from fournil.index.retriever import Retriever

FORMAT = "fournil-passage-index"
FORMAT_VERSION = 1
MANIFEST = "index.json"
PASSAGES = "passages.parquet"
BACKENDS: dict[str, type] = {BM25Retriever.name: BM25Retriever}


class BadIndexError(ValueError):
    """An index folder that cannot be searched: the message says which and why."""


def save_index(retriever: Retriever, folder: Path, settings: dict | None = None) -> dict:
    """Write a built retriever and its passages into `folder`, `index.json` last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_passages(retriever.passages, folder / PASSAGES)
    files = [folder / PASSAGES, *retriever.save(folder)]
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fournil_version": __version__,
        "backend": retriever.name, "analyzer": ANALYZER_ID, "versions": retriever.versions(),
        "passages": len(retriever.passages), "settings": settings or {},
        "files": {str(p.relative_to(folder)): sha256_file(p) for p in files},
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def read_index_manifest(folder: Path) -> dict:
    """`index.json` of `folder`, after checking that this fournil can read the index."""
    folder = Path(folder)
    if not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")
        hint = (f" ({partial} is a build that is running or was interrupted)"
                if partial.exists() else "")
        raise FileNotFoundError(f"{folder}: no passage index here{hint}; build one with "
                                "`fournil index`")
    if folder.name.endswith(".partial"):
        # the stage's work folder: even with index.json in it, the build may not be over (its
        # manifest is written and the folder renamed after)
        raise BadIndexError(f"{folder}: a build's work folder (running or interrupted), not a "
                            f"passage index; use {folder.with_name(folder.name[:-8])} once "
                            "`fournil index` has finished")
    path = folder / MANIFEST
    if not path.is_file():
        raise BadIndexError(f"{folder}: not a complete passage index (no {MANIFEST}, which is "
                            "written last); build it again with `fournil index`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadIndexError(f"{path}: corrupt ({e}); build the index again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadIndexError(f"{path}: not a fournil passage index manifest")
    built_by = f"fournil {manifest.get('fournil_version', '?')}"
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BadIndexError(
            f"{folder}: index format {manifest.get('format_version')!r} (built by {built_by}); "
            f"this fournil ({__version__}) reads format {FORMAT_VERSION}: build it again with "
            "`fournil index`")
    if manifest.get("analyzer") != ANALYZER_ID:
        raise BadIndexError(
            f"{folder}: built with the analyzer {manifest.get('analyzer')!r} ({built_by}); this "
            f"fournil analyzes queries with {ANALYZER_ID!r}, so its terms would not match: "
            "build it again with `fournil index`")
    if manifest.get("backend") not in BACKENDS:
        raise BadIndexError(f"{folder}: unknown backend {manifest.get('backend')!r} (known: "
                            f"{', '.join(BACKENDS)})")
    return manifest


def check_files(folder: Path, manifest: dict) -> None:
    """Every file the manifest lists is there with its sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict) or PASSAGES not in files:
        raise BadIndexError(f"{folder / MANIFEST}: lists no files")
    for name, expected in files.items():
        path = Path(folder) / name
        if not path.is_file():
            raise BadIndexError(f"{path}: missing from the index; build it again with "
                                "`fournil index`")
        if sha256_file(path) != expected:
            raise BadIndexError(f"{path}: corrupt (its sha256 is not the one {MANIFEST} "
                                "recorded); build the index again with `fournil index`")


def open_index(folder: str | Path) -> Retriever:
    """The retriever saved in `folder`, once the manifest and every file check out."""
    folder = Path(folder)
    manifest = read_index_manifest(folder)
    check_files(folder, manifest)
    passages = read_passages(folder / PASSAGES)
    if len(passages) != manifest["passages"]:
        raise BadIndexError(f"{folder / PASSAGES}: {len(passages)} passages, the manifest "
                            f"says {manifest['passages']}")
    return BACKENDS[manifest["backend"]].load(folder, passages)
