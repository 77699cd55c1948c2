"""Curated documents cut into passages a person can check: each one is `text[start:end]` of
its document exactly, and keeps the document's id, title, author, date, source, license and
URL (docs/DESIGN.md, "Passage index").

A passage is whole paragraphs (blocks between blank lines) packed from `min_chars` up to
`max_chars`. A longer paragraph is cut at line breaks (the theatre17 plays are verse without
a single blank line: one 85 kB paragraph per play), then at sentence ends, then at spaces.
Two rules come from the bundled corpus:
- a Markdown heading starts a passage, but a passage holding only headings is not closed by
  the next one (else ~290 RGAA passages were a lone `### Critère 3.3 ...`);
- a paragraph under `SLACK` characters stays with the passage before it, even past
  `max_chars` by as much (else the RGAA's `6. Si c'est le cas, le test est validé.` lines
  were ~40 orphan passages).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SLACK = 100
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
# finer and finer cuts for a paragraph longer than max_chars: lines, sentences, words
_FINER = (re.compile(r"\n"), re.compile(r"(?<=[.!?…»])\s+"), re.compile(r" "))
PROVENANCE = ("title", "author", "date", "source", "license", "url")


@dataclass(frozen=True)
class Passage:
    id: str  # "<document id>#<n>", n counting the document's passages from 0
    doc_id: str
    start: int  # character offsets in the document's text: text == document[start:end]
    end: int
    text: str
    title: str | None
    author: str | None
    date: str | None
    source: str
    license: str
    url: str | None

    def to_dict(self) -> dict:
        return asdict(self)


SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False), pa.field("doc_id", pa.string(), nullable=False),
    pa.field("start", pa.int64(), nullable=False), pa.field("end", pa.int64(), nullable=False),
    pa.field("text", pa.string(), nullable=False), pa.field("title", pa.string()),
    pa.field("author", pa.string()), pa.field("date", pa.string()),
    pa.field("source", pa.string(), nullable=False),
    pa.field("license", pa.string(), nullable=False), pa.field("url", pa.string()),
])
assert SCHEMA.names == [f.name for f in fields(Passage)]


def _pieces(text: str, pattern: re.Pattern, start: int, end: int) -> list[tuple[int, int]]:
    """The non-empty stretches of text[start:end] between matches of `pattern`."""
    out, pos = [], start
    for m in pattern.finditer(text, start, end):
        if m.start() > pos:
            out.append((pos, m.start()))
        pos = m.end()
    if pos < end:
        out.append((pos, end))
    return out


def _split(text: str, start: int, end: int, max_chars: int, level: int = 0
           ) -> list[tuple[int, int]]:
    """text[start:end] as pieces of at most max_chars, each cut as coarsely as it allows (a
    piece with no space in max_chars stays whole)."""
    if end - start <= max_chars or level == len(_FINER):
        return [(start, end)]
    return [piece for a, b in _pieces(text, _FINER[level], start, end)
            for piece in _split(text, a, b, max_chars, level + 1)]


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    """text[a:b] without the whitespace at its ends (a list item's indent, a line break)."""
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _units(text: str, max_chars: int) -> Iterator[tuple[int, int, bool, bool]]:
    """(start, end, is a heading, is a whole paragraph): what passages are packed from."""
    for a, b in _pieces(text, _PARAGRAPH_BREAK, 0, len(text)):
        a, b = _trim(text, a, b)
        if a == b:
            continue
        if b - a <= max_chars:
            yield a, b, text.startswith("#", a), True
            continue
        for x, y in _split(text, a, b, max_chars):
            x, y = _trim(text, x, y)
            if x < y:
                yield x, y, False, False


def cut(text: str, min_chars: int = 500, max_chars: int = 1000) -> list[tuple[int, int]]:
    """The (start, end) offsets of `text`'s passages, in order."""
    spans: list[tuple[int, int]] = []
    current: list[int] | None = None
    has_body = False  # the current passage holds more than headings
    for a, b, heading, whole in _units(text, max_chars):
        short = whole and b - a < SLACK and not heading
        if current is None:
            current, has_body = [a, b], not heading
        elif ((heading and has_body)
              or b - current[0] > max_chars + (SLACK if short else 0)
              or (has_body and current[1] - current[0] >= min_chars and not short)):
            spans.append((current[0], current[1]))
            current, has_body = [a, b], not heading
        else:
            current[1], has_body = b, has_body or not heading
    if current is not None:
        # a short tail joins the passage before it when both fit
        if spans and current[1] - current[0] < min_chars // 2 and \
                current[1] - spans[-1][0] <= max_chars:
            spans[-1] = (spans[-1][0], current[1])
        else:
            spans.append((current[0], current[1]))
    return spans


def document_passages(document: dict, min_chars: int = 500, max_chars: int = 1000
                      ) -> list[Passage]:
    """A curated document record's passages, with its provenance."""
    text = document["text"] or ""
    meta = {k: document.get(k) for k in PROVENANCE}
    return [Passage(id=f"{document['id']}#{i}", doc_id=document["id"], start=a, end=b,
                    text=text[a:b], **meta)
            for i, (a, b) in enumerate(cut(text, min_chars, max_chars))]


def write_passages(passages: Iterable[Passage], path: Path) -> None:
    rows = [p.to_dict() for p in passages]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path, compression="zstd")


def read_passages(path: Path) -> list[Passage]:
    table = pq.read_table(path)
    if table.schema.names != SCHEMA.names:
        raise ValueError(f"{path}: not a passages file (columns {table.schema.names}, "
                         f"expected {SCHEMA.names})")
    columns = [table.column(name).to_pylist() for name in SCHEMA.names]  # 2x row dicts' speed
    return [Passage(*row) for row in zip(*columns, strict=True)]


def title_and_text(passage: Passage) -> str:
    """What is indexed: the title too, since a Wikipedia passage names its subject only
    there (`C'est le club de Uganda Revenue Authority qui remporte le titre` never says
    which championship)."""
    return f"{passage.title}\n{passage.text}" if passage.title else passage.text
