"""Seed passages: curated documents cut into a few sentences each, with their provenance.

Every synthetic sample is grounded in real text: a passage of a kept document of the curate
stage, short enough for a small model's context (`passage_min_chars`..`passage_max_chars`).
A passage keeps its document's id, source and license. The train/eval split is decided per
*document* by a stable hash of its id, so no eval sample ever shares a seed document with a
train sample, whatever the seed, the task or the number of samples.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fournil.core.shards import iter_records
from fournil.synth.extract import sentences

# lines that are layout, not prose: headings, lists, tables, code, links
_NOT_PROSE = re.compile(r"^\s*(#|\||[-*•]\s|\d+[.)]\s|```|<|\[)")


@dataclass(frozen=True)
class Passage:
    id: str  # "<document id>#<index>"
    doc_id: str
    text: str
    source: str
    license: str
    split: str  # "train" | "eval", the document's


def split_of(doc_id: str, eval_fraction: float) -> str:
    """'eval' for a stable `eval_fraction` of document ids, else 'train'."""
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2**64
    return "eval" if h < eval_fraction else "train"


def _prose(text: str) -> bool:
    letters = sum(c.isalpha() for c in text)
    return not _NOT_PROSE.match(text) and letters >= 0.6 * len(text)


def chunk_text(text: str, min_chars: int, max_chars: int) -> list[str]:
    """Consecutive prose lines packed into passages of whole sentences, each between
    `min_chars` and `max_chars` long. A sentence longer than `max_chars` is left out."""
    passages: list[str] = []
    current: list[str] = []  # lines of the passage being built
    size = 0

    def close() -> None:
        nonlocal current, size
        if size >= min_chars:
            passages.append("\n".join(current))
        current, size = [], 0

    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        if not _prose(line):
            close()
            continue
        sentence_list = sentences(line)
        line_parts: list[str] = []
        for sentence in sentence_list:
            if len(sentence) > max_chars:
                if line_parts:
                    current.append(" ".join(line_parts))
                line_parts = []
                close()
                continue
            if size + len(sentence) + 1 > max_chars:
                if line_parts:
                    current.append(" ".join(line_parts))
                    line_parts = []
                close()
            line_parts.append(sentence)
            size += len(sentence) + 1
        if line_parts:
            current.append(" ".join(line_parts))
    close()
    return passages


def _spread(items: list, k: int, rng: random.Random) -> list:
    """At most `k` of `items`, evenly spread with a random offset, in order."""
    if len(items) <= k:
        return items
    step = len(items) / k
    offset = rng.random() * step
    return [items[int(offset + i * step)] for i in range(k)]


def iter_passages(curate_dir: str | Path, min_chars: int, max_chars: int, eval_fraction: float,
                  max_per_doc: int) -> Iterator[Passage]:
    """The seed passages of a completed curate stage's kept documents, in document order."""
    documents = Path(curate_dir) / "documents"
    if not documents.is_dir():
        raise FileNotFoundError(f"{documents}: no curated documents; run `fournil curate` first")
    for record in iter_records(documents, columns=["id", "text", "source", "license"]):
        doc_id = record["id"]
        chunks = chunk_text(record["text"] or "", min_chars, max_chars)
        rng = random.Random(doc_id)
        split = split_of(doc_id, eval_fraction)
        for k, text in enumerate(_spread(chunks, max_per_doc, rng)):
            yield Passage(f"{doc_id}#{k}", doc_id, text, record["source"], record["license"],
                          split)
