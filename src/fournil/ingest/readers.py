"""Readers: raw documents from JSONL (plain, .gz, .zst), JSON, Parquet, text, PDF and HTML.

A source is a file or a folder plus its provenance (name, license, language), taken from the
recipe's `SourceSpec` and from an optional `source.toml` sidecar in the folder; recipe values
win. Readers stream: JSONL line by line, Parquet batch by batch. Each input record becomes
one `Read`: a record in `DOC_SCHEMA` form and, when it cannot be used, a rejection reason
(`ingest:bad_json`, `ingest:bad_utf8`, `ingest:missing_text`, ...). A text, PDF or HTML
file is one document; one that gives no text is a rejected record too (`ingest:pdf_encrypted`,
`ingest:pdf_no_text`, `ingest:html_no_content`, ...: see pdf.py and html.py). Text files
(.txt, .md) are decoded by charsets.py: BOM, valid UTF-8, else detection (windows-1252 for
Western text); the encoding goes to `meta`.

Damage and misconfiguration are told apart. A damaged file never stops a run: what it held
before the damage is read, and the damage is ONE rejected record (`damaged` set on its
`Read`) naming the file and, where known, the line (JSONL, 1-based) or row (Parquet and JSON
lists, 0-based), with the readable bytes, if any, as its text:

- `ingest:truncated`: a .gz/.zst stream that ends early, or a JSONL file whose last line has
  no newline and does not parse (a download cut short); the lines before are kept;
- `ingest:corrupt_gzip`, `ingest:corrupt_zstd`: compressed data that does not decompress or
  fails its checksum. Corrupt deflate data often still inflates, into lines that parse as
  records with the wrong text, until the member's CRC fails at its end; so a compressed file
  is checked whole before it is read, and only the members before the failing one are kept
  (none, for a file of one member). This costs a second decompression: ~5% of the ingest
  time of a .jsonl.gz;
- `ingest:broken_parquet`: a file Parquet cannot open (bad magic, truncated footer), or a
  row group it cannot read (one record for the group; the other groups are read). Page
  checksums are verified where the writer stored them;
- `ingest:bad_json` for a .json file that does not parse, or a JSONL file none of whose lines
  is a JSON object (then its last line's rejection stands for the file);
- `ingest:empty_file`: a file of 0 bytes (any format), a JSON file of whitespace or an empty
  list, a Parquet file without rows, a JSONL file of blank lines: a file that holds no record
  is still one read record, so that nothing in a folder goes unaccounted for (a text file
  of whitespace only is a document without text: `ingest:empty_text`);
- `ingest:undecodable`, `ingest:binary` (text and HTML files, charsets.py), `ingest:pdf_broken`,
  `ingest:not_pdf`, `ingest:binary` (pdf.py), `ingest:html_broken` (html.py).

Bad records inside a readable file (a bad JSON line among good ones, a missing or empty
text) are rejections of their own, not damage. What is wrong with the configuration, not
with a file, still raises `IngestError` and stops the stage: a missing path, an unknown
format or encoding, a bad source.toml, a text field that no record has (per JSONL file, per
source for JSON files) or that a Parquet file lacks.

The sources and their sidecar are sources.py; records and their provenance, records.py;
compressed streams, compressed.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fournil.ingest.charsets import UndecodableError, decode
from fournil.ingest.compressed import StreamError, chunks, lines_of
from fournil.ingest.html import HtmlError, extract_html
from fournil.ingest.pdf import PdfError, extract_pdf
from fournil.ingest.records import (
    DAMAGE,
    Place,
    Read,
    file_document,
    from_fields,
    unparsed,
    utf8_error,
)
from fournil.ingest.sources import SIDECAR, IngestError, Source, format_of


def read_source(source: Source) -> Iterator[Read]:
    """Every record of every file of the source, in order."""
    json_seen, json_with_text = 0, 0
    for file in source.files:
        fmt = format_of(file, source.format)
        if file.stat().st_size == 0:
            yield _empty_file(file, source, fmt, "empty file (0 bytes)")
        elif fmt == "jsonl":
            yield from read_jsonl(file, source)
        elif fmt == "parquet":
            yield from read_parquet(file, source)
        elif fmt == "txt":
            yield read_text(file, source)
        elif fmt == "pdf":
            yield read_pdf(file, source)
        elif fmt == "html":
            yield read_html(file, source)
        else:
            for read in read_json(file, source):
                json_seen += read.reason not in _UNPARSED
                json_with_text += read.reason not in (*_UNPARSED, "ingest:missing_text")
                yield read
    # One JSON file per article is common, so a missing text field is judged per source.
    if json_seen and not json_with_text:
        raise IngestError(f"{source.path}: no JSON record has the text field "
                          f"{source.text_field!r}; set text_field in the recipe or {SIDECAR}")


_UNPARSED = ("ingest:bad_utf8", "ingest:bad_json", "ingest:not_object", "ingest:empty_file")


def _empty_file(path: Path, source: Source, fmt: str | None, error: str) -> Read:
    """The one record a file without records stands for (an id as its document would have)."""
    place = Place(path, source.relative(path))
    if fmt in ("txt", "pdf", "html"):
        return file_document(place, source, "", "ingest:empty_file", {}, {"error": error},
                              damaged=True)
    return unparsed(b"", source, place, "ingest:empty_file", error, damaged=True)


def read_jsonl(path: Path, source: Source) -> Iterator[Read]:
    """One `Read` per non-blank line (blank lines are not records and are not counted).

    The last read is held back until the file ends: when no line of the file was a JSON
    object, that read is marked as the file's damage.
    """
    state = _JsonlState()
    held: Read | None = None
    for read in _jsonl_reads(path, source, state):
        if held is not None:
            yield held
        held = read
    if held is None:
        yield _empty_file(path, source, "jsonl", "no JSON lines (blank lines only)")
        return
    if state.objects == 0 and not held.damaged:
        held.damaged = True
        held.error = (f"not JSONL: none of its {state.records} line(s) is a JSON object "
                      f"(the last: {held.error or held.reason})")
    yield held
    if state.objects and not state.with_text:
        raise IngestError(f"{path}: no record has the text field {source.text_field!r} "
                          f"(fields: {', '.join(state.first_keys)}); set text_field in the "
                          f"recipe or {SIDECAR}")


@dataclass
class _JsonlState:
    records: int = 0
    objects: int = 0
    with_text: int = 0
    first_keys: list[str] = field(default_factory=list)


def _jsonl_reads(path: Path, source: Source, state: _JsonlState) -> Iterator[Read]:
    rel = source.relative(path)
    lines = lines_of(chunks(path))
    number = 0
    while True:
        try:
            line, ended = next(lines)
        except StopIteration:
            return
        except StreamError as e:  # the rest of the file is one rejected record
            state.records += 1
            place = Place(path, rel, line=number + 1)
            yield unparsed(e.tail, source, place, e.reason, str(e), damaged=True)
            return
        number += 1
        if not line.strip():
            continue
        state.records += 1
        place = Place(path, rel, line=number)
        obj = _load_json(line, place, source)
        if isinstance(obj, Read):
            if not ended:  # the last line stops mid-way: the file was cut there
                yield unparsed(line, source, place, "ingest:truncated",
                                f"the file ends inside line {number} (no newline, not JSON: "
                                f"{obj.error}); cut short?", damaged=True)
                return
            yield obj
            continue
        if not isinstance(obj, dict):
            yield _not_object(obj, source, place)
            continue
        state.objects += 1
        state.first_keys = state.first_keys or list(obj)
        state.with_text += source.text_field in obj
        yield from_fields(obj, source, place)


def _load_json(raw: bytes, place: Place, source: Source) -> object:
    """The JSON value in `raw`, or the rejected record (a `Read`) saying why there is none."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return unparsed(raw, source, place, "ingest:bad_utf8", utf8_error(raw, e))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return unparsed(raw, source, place, "ingest:bad_json",
                         f"{e.msg} (line {e.lineno}, column {e.colno})")


def _not_object(value: object, source: Source, place: Place) -> Read:
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "replace")
    return unparsed(raw, source, place, "ingest:not_object",
                     f"expected a JSON object, got {type(value).__name__}")


def read_json(path: Path, source: Source) -> Iterator[Read]:
    """A `.json` file holding one object (one record) or a list of objects (one per row).

    JSON cannot be streamed with the standard library, so the file is loaded whole; use
    JSONL for big inputs. A file that does not parse is one rejected record, and damage.
    """
    data = path.read_bytes()
    if not data.strip():
        yield _empty_file(path, source, "json", "whitespace only, no JSON value")
        return
    rel = source.relative(path)
    value = _load_json(data, Place(path, rel), source)
    if isinstance(value, Read):
        value.damaged = True
        yield value
    elif isinstance(value, dict):
        yield from_fields(value, source, Place(path, rel))
    elif isinstance(value, list):
        if not value:
            yield _empty_file(path, source, "json", "an empty JSON list, no records")
        for i, item in enumerate(value):
            place = Place(path, rel, row=i)
            is_object = isinstance(item, dict)
            yield from_fields(item, source, place) if is_object else _not_object(item, source,
                                                                                  place)
    else:
        yield _not_object(value, source, Place(path, rel))


_TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())


def read_parquet(path: Path, source: Source, batch_size: int = 1024) -> Iterator[Read]:
    """One `Read` per row, read in batches so that a big shard never sits in memory whole.

    Row group by row group: each can be read without the others, so one that is corrupt
    costs its own rows only (one rejected record for them), not the rest of the file.
    """
    rel = source.relative(path)
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as e:
        yield unparsed(b"", source, Place(path, rel), "ingest:broken_parquet",
                        f"not a readable Parquet file ({e})", damaged=True)
        return
    if source.text_field not in schema.names:
        raise IngestError(f"{path}: no text column {source.text_field!r} (columns: "
                          f"{', '.join(schema.names)}); set text_field in the recipe or "
                          f"{SIDECAR}")
    text_type = schema.field(source.text_field).type
    if text_type not in _TEXT_TYPES and str(text_type) != "string_view":
        raise IngestError(f"{path}: text column {source.text_field!r} has type {text_type}, "
                          "expected a string")
    if parquet.metadata.num_rows == 0:
        yield _empty_file(path, source, "parquet", "a Parquet file without rows")
        return
    row = 0
    for group in range(parquet.num_row_groups):
        end = row + parquet.metadata.row_group(group).num_rows
        batches = parquet.iter_batches(batch_size=batch_size, row_groups=[group])
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as e:
                yield unparsed(b"", source, Place(path, rel, row=row), "ingest:broken_parquet",
                                f"rows {row}-{end - 1} ({end - row} rows, row group {group}) "
                                f"cannot be read (corrupt Parquet: {e})", damaged=True)
                break
            for obj in batch.to_pylist():
                yield from_fields(obj, source, Place(path, rel, row=row))
                row += 1
        row = end


def read_text(path: Path, source: Source) -> Read:
    """A text or Markdown file as one document, its id the file's path without suffix.

    Read as bytes and decoded (charsets.py), so that NEL (U+0085), CR and other line breaks
    reach the record as they are in the file: neither universal newlines nor splitlines
    touch them. The encoding goes to `meta`; a byte order mark is not text.
    """
    data = path.read_bytes()
    place = Place(path, source.relative(path))
    try:
        decoded = decode(data, forced=source.encoding)
    except UndecodableError as e:
        meta = {"error": str(e), "detector": e.finding} if e.finding else {"error": str(e)}
        readable = "" if e.reason == "ingest:binary" else data.decode("utf-8", "replace")
        return file_document(place, source, readable, e.reason, {}, meta, damaged=True)
    reason = None if decoded.text.strip() else "ingest:empty_text"
    return file_document(place, source, decoded.text, reason, {},
                          {"encoding": decoded.encoding})


def read_pdf(path: Path, source: Source) -> Read:
    """A PDF file as one document: its text with headings, paragraphs and lists (pdf.py)."""
    place = Place(path, source.relative(path))
    try:
        pdf = extract_pdf(path)
    except PdfError as e:
        return file_document(place, source, "", e.reason, {}, {"error": str(e)},
                              damaged=e.reason in DAMAGE)
    meta = {"pages": pdf.pages}
    if pdf.pages_without_text:
        meta["pages_without_text"] = pdf.pages_without_text
    return file_document(place, source, pdf.text, None,
                          {"title": pdf.title, "author": pdf.author}, meta)


def read_html(path: Path, source: Source) -> Read:
    """An HTML page as one document: its main content, without navigation (html.py).

    The page's `<html lang>` goes to `meta`: the source's declared language stays the
    record's, as for text files (templates often carry a wrong `lang`).
    """
    place = Place(path, source.relative(path))
    try:
        page = extract_html(path.read_bytes(), encoding=source.encoding)
    except HtmlError as e:
        return file_document(place, source, "", e.reason, {}, {"error": str(e)},
                              damaged=e.reason in DAMAGE)
    meta = {"encoding": page.encoding}
    if page.language:
        meta["lang"] = page.language
    return file_document(place, source, page.text, None,
                          {"title": page.title, "url": page.url}, meta)
