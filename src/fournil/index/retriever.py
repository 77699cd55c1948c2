"""What every retrieval backend is to the rest of fournil: build over passages, save into a
folder, load from it, search. The index folder's manifest, its checks and the passages file
are `fournil.index.store`'s, so a backend only reads and writes its own files; tantivy (in
bench/index_bench.py) or a client of an external engine fit behind the same four methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from fournil.index.passages import Passage


class Hit(NamedTuple):
    passage: Passage
    score: float  # the backend's own scale: comparable between the hits of one query only


class Retriever(Protocol):
    name: str  # the backend, as the index manifest records it
    passages: Sequence[Passage]  # row i is the backend's document i

    def build(self, passages: Sequence[Passage]) -> None:
        """Index `passages` (title and text)."""

    def save(self, folder: Path) -> list[Path]:
        """Write the backend's files into `folder`; returns them."""

    @classmethod
    def load(cls, folder: Path, passages: Sequence[Passage]) -> Retriever:
        """The retriever `save` wrote into `folder`, over the same `passages`."""

    def search(self, query: str, k: int) -> list[Hit]:
        """At most k hits, best first, each with a score > 0 and a distinct text."""

    def document_frequencies(self, terms: Sequence[str]) -> list[int]:
        """How many passages hold each analyzed term (what idf is made of)."""

    def versions(self) -> dict[str, str]:
        """The libraries the files depend on, for the manifest."""


def distinct(rows_and_scores: Sequence[tuple[int, float]], passages: Sequence[Passage],
             k: int) -> list[Hit]:
    """The first k hits of distinct texts with a positive score: the RGAA repeats one test
    procedure under many criteria, and three copies in a prompt say nothing more than one."""
    seen: set[str] = set()
    hits = []
    for row, score in rows_and_scores:
        passage = passages[row]
        if score <= 0 or passage.text in seen:
            continue
        seen.add(passage.text)
        hits.append(Hit(passage, float(score)))
        if len(hits) == k:
            break
    return hits
