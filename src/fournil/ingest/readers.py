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

Sidecar (`source.toml`), every key optional:

    name = "cligs-textbox/nouvelles19"      # the records' `source`
    license = "public domain"               # raw or SPDX; a record's own `license` wins
    language = "fr"
    format = "txt"                          # auto | jsonl | json | parquet | txt | pdf | html
    encoding = "cp1252"                     # text and HTML files: no detection, this one
    text_field = "text"                     # JSON / Parquet field holding the text
    id_field = "id"                         # field holding the local id
    fields = { date = "timestamp" }         # document column <- record field
    include = ["*.txt"]                     # globs, relative to the folder
    metadata_csv = "metadata.csv"           # per-file metadata for text, PDF and HTML files
    metadata_id_column = "idno"             # a file matches the row whose id its stem ends with
    metadata_fields = { author = "author-name", title = "title", date = "year" }
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fournil.ingest.charsets import UndecodableError, decode, encoding_name
from fournil.ingest.config import FORMATS, SUFFIXES, SourceSpec
from fournil.ingest.html import HtmlError, extract_html
from fournil.ingest.pdf import PdfError, extract_pdf
from fournil.provenance.licenses import normalize_license
from fournil.provenance.records import DOC_SCHEMA

SIDECAR = "source.toml"
# Documentation that ships next to the documents (readme.md, PROVENANCE.md) is not a document.
HOUSEKEEPING = {"readme", "provenance", "license", "licence", "changelog"}
OPTIONAL_COLUMNS = ("url", "title", "author", "date", "language")
# Where the optional columns are found in records that do not say (FineWeb, Common Corpus).
ALIASES = {
    "url": ("url",), "title": ("title",), "author": ("author", "creator"),
    "date": ("date",), "language": ("language", "lang"), "license": ("license",),
}
ID_ALIASES = ("id", "identifier")
CHUNK = 1 << 20

_LANGUAGES = {  # names and ISO 639-2/3 codes seen in corpora -> ISO 639-1
    "fra": "fr", "fre": "fr", "french": "fr", "francais": "fr", "français": "fr",
    "eng": "en", "english": "en", "deu": "de", "ger": "de", "german": "de",
    "spa": "es", "spanish": "es", "ita": "it", "italian": "it", "por": "pt",
    "portuguese": "pt", "nld": "nl", "dut": "nl", "dutch": "nl", "lat": "la", "latin": "la",
}
# File-level rejections of text, PDF and HTML files that mean the file is damaged (an
# encrypted PDF or a page of navigation only is whole, just not usable).
DAMAGE = frozenset({"ingest:undecodable", "ingest:binary", "ingest:pdf_broken", "ingest:not_pdf",
                    "ingest:html_broken", "ingest:empty_file"})


class IngestError(ValueError):
    """An input that cannot be read as a whole; the message names the file and the place."""


class SourceDescription(TypedDict):
    """A source as ingest resolved it (recipe over source.toml over defaults)."""

    name: str
    path: str
    format: str
    license: str | None  # SPDX, as normalised
    license_raw: str | None  # as declared
    language: str | None
    encoding: str | None  # forced; None: detected per file
    files: int


@dataclass
class Source:
    """One ingest input with its provenance resolved (recipe over sidecar over defaults)."""

    name: str
    path: Path
    license: str | None = None  # raw, as declared; normalised per record
    language: str | None = None
    format: str = "auto"
    text_field: str = "text"
    id_field: str | None = None
    encoding: str | None = None  # text and HTML files: forced instead of detected
    fields: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # CSV rows by id
    metadata_fields: dict[str, str] = field(default_factory=dict)
    metadata_id_column: str | None = None
    files: list[Path] = field(default_factory=list)  # the documents, in reading order
    config_files: list[Path] = field(default_factory=list)  # sidecar and metadata CSV

    def relative(self, file: Path) -> str:
        """The file's name inside the source, used in ids and `meta` (stable across machines)."""
        root = self.path if self.path.is_dir() else self.path.parent
        return file.relative_to(root).as_posix()

    def describe(self) -> SourceDescription:
        return {"name": self.name, "path": str(self.path), "format": self.format,
                "license": normalize_license(self.license) if self.license else None,
                "license_raw": self.license, "language": self.language,
                "encoding": self.encoding, "files": len(self.files)}


@dataclass
class Read:
    """One input record: a document, or a rejected one when `reason` is set."""

    record: dict  # DOC_SCHEMA columns
    reason: str | None  # e.g. `ingest:bad_json`; None for a usable document
    file: Path
    where: str  # `path: line 12`, for messages
    license_raw: str | None  # the declared license string behind `record["license"]`
    damaged: bool = False  # the file, or what is left of it, is unreadable (see above)
    error: str | None = None  # what is wrong, for messages and the manifest


# --- sources ------------------------------------------------------------------------------


def resolve_source(spec: SourceSpec, path: Path) -> Source:
    """Merge the recipe's spec with the folder's sidecar and list the files to read."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: no such file or folder (source {spec.name or spec.path!r})")
    folder = path if path.is_dir() else path.parent
    sidecar_path = folder / SIDECAR
    side = _read_sidecar(sidecar_path) if sidecar_path.is_file() else {}
    # recipe values win over the sidecar's; what neither sets takes the reader's default
    source = Source(
        name=spec.name or side.get("name") or _default_name(path),
        path=path,
        license=spec.license or side.get("license"),
        language=_source_language(spec.language or side.get("language")),
        format=spec.format or side.get("format", "auto"),
        text_field=spec.text_field or side.get("text_field", "text"),
        id_field=spec.id_field or side.get("id_field"),
        encoding=_encoding(spec.encoding, f"source {spec.name or spec.path!r}") if spec.encoding
        else _encoding(side.get("encoding"), str(sidecar_path)),
        fields=dict(side.get("fields", {})),
        metadata_fields=dict(side.get("metadata_fields", {})),
        metadata_id_column=side.get("metadata_id_column"),
    )
    if sidecar_path.is_file():
        source.config_files.append(sidecar_path)
    if "metadata_csv" in side:
        csv_path = folder / side["metadata_csv"]
        source.metadata = _read_metadata(csv_path, source)
        source.config_files.append(csv_path)
    source.files = _list_files(source, side.get("include"))
    return source


_SIDECAR_TYPES = {
    "name": str, "license": str, "language": str, "format": str, "text_field": str,
    "id_field": str, "encoding": str, "fields": dict, "include": list, "metadata_csv": str,
    "metadata_id_column": str, "metadata_fields": dict,
}


def _read_sidecar(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise IngestError(f"{path}: not valid TOML: {e}") from None
    for key, value in data.items():
        if key not in _SIDECAR_TYPES:
            raise IngestError(f"{path}: {key}: unknown key (known: {', '.join(_SIDECAR_TYPES)})")
        if not isinstance(value, _SIDECAR_TYPES[key]):
            kind = _SIDECAR_TYPES[key].__name__
            raise IngestError(f"{path}: {key}: expected a {kind}, got {value!r}")
    if data.get("format", "auto") not in ("auto", *FORMATS):
        raise IngestError(f"{path}: format: unknown format {data['format']!r} "
                          f"(auto, {', '.join(FORMATS)})")
    for key in ("fields", "metadata_fields"):
        for column, name in data.get(key, {}).items():
            if column not in (*OPTIONAL_COLUMNS, "license") or not isinstance(name, str):
                raise IngestError(f"{path}: {key}.{column}: expected one of "
                                  f"{', '.join((*OPTIONAL_COLUMNS, 'license'))} = \"field\"")
    if "metadata_csv" in data and "metadata_id_column" not in data:
        raise IngestError(f"{path}: metadata_csv needs metadata_id_column")
    return data


def _encoding(label: str | None, where: str) -> str | None:
    """A forced encoding's codec name; an unknown one is a configuration error."""
    if label is None:
        return None
    try:
        return encoding_name(label)
    except LookupError:
        raise IngestError(f"{where}: encoding: unknown encoding {label!r} (e.g. utf-8, "
                          "cp1252, latin-1, utf-16)") from None


def _source_language(value: str | None) -> str | None:
    """A declared language as ISO 639-1 where recognised, else as declared."""
    return _language(value) or value


def _default_name(path: Path) -> str:
    return path.name.split(".")[0] if path.is_file() else path.name


def _read_metadata(path: Path, source: Source) -> dict[str, dict[str, str]]:
    if not path.is_file():
        raise IngestError(f"{path}: metadata_csv not found (named in {SIDECAR})")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return _metadata_rows(path, csv.DictReader(f), source)
    except (UnicodeDecodeError, csv.Error) as e:
        raise IngestError(f"{path}: cannot read the metadata CSV ({e})") from None


def _metadata_rows(path: Path, reader: csv.DictReader, source: Source) -> dict[str, dict]:
    columns = reader.fieldnames or []
    wanted = [source.metadata_id_column, *source.metadata_fields.values()]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise IngestError(f"{path}: no column {', '.join(map(repr, missing))} "
                          f"(columns: {', '.join(columns)})")
    rows: dict[str, dict[str, str]] = {}
    for row in reader:
        key = (row.get(source.metadata_id_column) or "").strip()
        if key:
            rows.setdefault(key, row)  # the first row of an id wins
    return rows


def _format_of(path: Path, declared: str) -> str | None:
    if declared != "auto":
        return declared
    name = path.name.lower()
    for fmt, suffixes in SUFFIXES.items():
        if name.endswith(suffixes):
            return fmt
    return None


def _list_files(source: Source, include: list[str] | None) -> list[Path]:
    if source.path.is_file():
        if _format_of(source.path, source.format) is None:
            raise IngestError(f"{source.path}: unknown format (known suffixes: "
                              f"{', '.join(s for v in SUFFIXES.values() for s in v)}); "
                              "set format in the recipe or source.toml")
        return [source.path]
    root = source.path
    if include:
        candidates = {p for pattern in include for p in root.glob(pattern)}
    else:
        candidates = set(root.rglob("*"))
    files = []
    for p in sorted(candidates):
        rel = p.relative_to(root)
        if not p.is_file() or p in source.config_files or p.name == SIDECAR \
                or p.name.endswith(".tmp"):
            continue
        if any(part.startswith(".") for part in rel.parts):  # .git, .DS_Store
            continue
        fmt = _format_of(p, source.format)
        if include:
            if fmt is None:
                raise IngestError(f"{p}: unknown format; set format in {root / SIDECAR}")
        elif fmt is None or not p.name.lower().endswith(SUFFIXES[fmt]):
            continue  # not a document (metadata.csv, images, ...)
        elif p.name.split(".")[0].lower() in HOUSEKEEPING:
            continue
        files.append(p)
    if not files:
        wanted = include or SUFFIXES.get(source.format) or [s for v in SUFFIXES.values()
                                                            for s in v]
        raise IngestError(f"{root}: no input files (looked for {', '.join(wanted)})")
    return files


# --- reading ------------------------------------------------------------------------------


def read_source(source: Source) -> Iterator[Read]:
    """Every record of every file of the source, in order."""
    json_seen, json_with_text = 0, 0
    for file in source.files:
        fmt = _format_of(file, source.format)
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


@dataclass
class _Place:
    """Where a record comes from: for ids, `meta` and messages."""

    file: Path
    rel: str
    line: int | None = None  # JSONL, 1-based
    row: int | None = None  # Parquet, JSON lists: 0-based

    @property
    def where(self) -> str:
        if self.line is not None:
            return f"{self.file}: line {self.line}"
        return f"{self.file}: row {self.row}" if self.row is not None else str(self.file)

    @property
    def local_id(self) -> str:
        n = self.line if self.line is not None else self.row
        return self.rel if n is None else f"{self.rel}:{n}"

    def meta(self) -> dict:
        meta: dict = {"file": self.rel}
        if self.line is not None:
            meta["line"] = self.line
        if self.row is not None:
            meta["row"] = self.row
        return meta


def _empty_file(path: Path, source: Source, fmt: str | None, error: str) -> Read:
    """The one record a file without records stands for (an id as its document would have)."""
    place = _Place(path, source.relative(path))
    if fmt in ("txt", "pdf", "html"):
        return _file_document(place, source, "", "ingest:empty_file", {}, {"error": error},
                              damaged=True)
    return _unparsed(b"", source, place, "ingest:empty_file", error, damaged=True)


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
    lines = _lines(_chunks(path))
    number = 0
    while True:
        try:
            line, ended = next(lines)
        except StopIteration:
            return
        except _StreamError as e:  # the rest of the file is one rejected record
            state.records += 1
            place = _Place(path, rel, line=number + 1)
            yield _unparsed(e.tail, source, place, e.reason, str(e), damaged=True)
            return
        number += 1
        if not line.strip():
            continue
        state.records += 1
        place = _Place(path, rel, line=number)
        obj = _load_json(line, place, source)
        if isinstance(obj, Read):
            if not ended:  # the last line stops mid-way: the file was cut there
                yield _unparsed(line, source, place, "ingest:truncated",
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
        yield _from_fields(obj, source, place)


def _load_json(raw: bytes, place: _Place, source: Source) -> object:
    """The JSON value in `raw`, or the rejected record (a `Read`) saying why there is none."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return _unparsed(raw, source, place, "ingest:bad_utf8", _utf8_error(raw, e))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return _unparsed(raw, source, place, "ingest:bad_json",
                         f"{e.msg} (line {e.lineno}, column {e.colno})")


def _not_object(value: object, source: Source, place: _Place) -> Read:
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "replace")
    return _unparsed(raw, source, place, "ingest:not_object",
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
    value = _load_json(data, _Place(path, rel), source)
    if isinstance(value, Read):
        value.damaged = True
        yield value
    elif isinstance(value, dict):
        yield _from_fields(value, source, _Place(path, rel))
    elif isinstance(value, list):
        if not value:
            yield _empty_file(path, source, "json", "an empty JSON list, no records")
        for i, item in enumerate(value):
            place = _Place(path, rel, row=i)
            is_object = isinstance(item, dict)
            yield _from_fields(item, source, place) if is_object else _not_object(item, source,
                                                                                  place)
    else:
        yield _not_object(value, source, _Place(path, rel))


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
        yield _unparsed(b"", source, _Place(path, rel), "ingest:broken_parquet",
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
                yield _unparsed(b"", source, _Place(path, rel, row=row), "ingest:broken_parquet",
                                f"rows {row}-{end - 1} ({end - row} rows, row group {group}) "
                                f"cannot be read (corrupt Parquet: {e})", damaged=True)
                break
            for obj in batch.to_pylist():
                yield _from_fields(obj, source, _Place(path, rel, row=row))
                row += 1
        row = end


def read_text(path: Path, source: Source) -> Read:
    """A text or Markdown file as one document, its id the file's path without suffix.

    Read as bytes and decoded (charsets.py), so that NEL (U+0085), CR and other line breaks
    reach the record as they are in the file: neither universal newlines nor splitlines
    touch them. The encoding goes to `meta`; a byte order mark is not text.
    """
    data = path.read_bytes()
    place = _Place(path, source.relative(path))
    try:
        decoded = decode(data, forced=source.encoding)
    except UndecodableError as e:
        meta = {"error": str(e), "detector": e.finding} if e.finding else {"error": str(e)}
        readable = "" if e.reason == "ingest:binary" else data.decode("utf-8", "replace")
        return _file_document(place, source, readable, e.reason, {}, meta, damaged=True)
    reason = None if decoded.text.strip() else "ingest:empty_text"
    return _file_document(place, source, decoded.text, reason, {},
                          {"encoding": decoded.encoding})


def read_pdf(path: Path, source: Source) -> Read:
    """A PDF file as one document: its text with headings, paragraphs and lists (pdf.py)."""
    place = _Place(path, source.relative(path))
    try:
        pdf = extract_pdf(path)
    except PdfError as e:
        return _file_document(place, source, "", e.reason, {}, {"error": str(e)},
                              damaged=e.reason in DAMAGE)
    meta = {"pages": pdf.pages}
    if pdf.pages_without_text:
        meta["pages_without_text"] = pdf.pages_without_text
    return _file_document(place, source, pdf.text, None,
                          {"title": pdf.title, "author": pdf.author}, meta)


def read_html(path: Path, source: Source) -> Read:
    """An HTML page as one document: its main content, without navigation (html.py).

    The page's `<html lang>` goes to `meta`: the source's declared language stays the
    record's, as for text files (templates often carry a wrong `lang`).
    """
    place = _Place(path, source.relative(path))
    try:
        page = extract_html(path.read_bytes(), encoding=source.encoding)
    except HtmlError as e:
        return _file_document(place, source, "", e.reason, {}, {"error": str(e)},
                              damaged=e.reason in DAMAGE)
    meta = {"encoding": page.encoding}
    if page.language:
        meta["lang"] = page.language
    return _file_document(place, source, page.text, None,
                          {"title": page.title, "url": page.url}, meta)


def _file_document(place: _Place, source: Source, text: str, reason: str | None,
                   columns: dict[str, str | None], meta: dict, damaged: bool = False) -> Read:
    """One file as one document, its id the file's path without suffix.

    `columns` is what the file says about itself (a PDF's title); the metadata CSV's row for
    the file wins over it. `meta` is added to the record's `meta`.
    """
    found, extra = _file_metadata(place.file, source)
    found = {**{k: v for k, v in columns.items() if v}, **found}
    raw_license = found.pop("license", None) or source.license
    meta = {**place.meta(), **meta}
    license = normalize_license(raw_license)
    if raw_license is not None and raw_license != license:
        meta["license_raw"] = raw_license
    if extra:
        meta["extra"] = extra
    language = _language(found.pop("language", None)) or source.language
    record = _record(id=f"{source.name}/{place.rel.rsplit('.', 1)[0]}", text=text,
                     source=source.name, license=license, language=language, meta=meta,
                     **found)
    return Read(record, reason, place.file, place.where, raw_license, damaged,
                meta.get("error"))


def _file_metadata(path: Path, source: Source) -> tuple[dict, dict]:
    """(document columns, other CSV columns) for a text, PDF or HTML file, from the CSV."""
    if not source.metadata:
        return {}, {}
    row = _match_metadata(path.name.split(".")[0], source.metadata)
    if row is None:
        return {}, {}
    columns = {col: _as_str(row.get(name)) for col, name in source.metadata_fields.items()}
    used = {source.metadata_id_column, *source.metadata_fields.values()}
    extra = {k: v for k, v in row.items() if k and k not in used and v not in (None, "")}
    return {k: v for k, v in columns.items() if v is not None}, extra


def _match_metadata(stem: str, rows: dict[str, dict]) -> dict | None:
    """The row whose id the stem ends with: `Boyer_Agamemnon_tc0146` <-> `tc0146`."""
    if stem in rows:
        return rows[stem]
    last = re.split(r"[_\-\s.]", stem)[-1]
    if last in rows:
        return rows[last]
    ends = [key for key in rows if stem.endswith(key)]
    return rows[max(ends, key=len)] if ends else None


# --- records ------------------------------------------------------------------------------


def _from_fields(obj: dict, source: Source, place: _Place) -> Read:
    """A document record from a JSON object or a Parquet row; unmapped fields go to `meta`."""
    used = {source.text_field}
    found: dict[str, str | None] = {}
    for column in (*OPTIONAL_COLUMNS, "license"):
        name = _field_name(obj, source.fields.get(column), ALIASES[column])
        used.add(name)
        found[column] = _as_str(obj.get(name)) if name else None
    id_name = _field_name(obj, source.id_field, ID_ALIASES)
    used.add(id_name)
    local_id = _as_str(obj.get(id_name)) if id_name else None

    meta = place.meta()
    raw_license = found.pop("license") or source.license
    license = normalize_license(raw_license)
    if raw_license is not None and raw_license != license:
        meta["license_raw"] = raw_license
    language = found.pop("language")
    if language is not None and _language(language) is None:
        meta["language_raw"] = language
    language = _language(language) if language is not None else source.language
    extra = {k: v for k, v in obj.items() if k not in used and v is not None}
    if extra:
        meta["extra"] = extra

    text, reason = _text(obj.get(source.text_field))
    record = _record(id=f"{source.name}/{local_id or place.local_id}", text=text,
                     source=source.name, license=license, language=language, meta=meta,
                     **found)
    if reason is None and not _encodable(record):  # lone surrogates from JSON escapes
        reason = "ingest:bad_utf8"
    if reason is not None:
        record = _clean(record)
    return Read(record, reason, place.file, place.where, raw_license)


def _field_name(obj: dict, declared: str | None, aliases: Iterable[str]) -> str | None:
    if declared:
        return declared
    return next((a for a in aliases if obj.get(a) not in (None, "")), None)


def _text(value: object) -> tuple[str, str | None]:
    """(text, rejection reason or None)."""
    if value is None:
        return "", "ingest:missing_text"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("utf-8", "replace"), "ingest:bad_utf8"
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, default=str), "ingest:bad_text"
    if not value.strip():
        return value, "ingest:empty_text"
    return value, None


def _record(meta: dict, **columns: object) -> dict:
    record = {name: columns.get(name) for name in DOC_SCHEMA.names}
    record["meta"] = json.dumps(meta, ensure_ascii=False, default=_json_default)
    return record


def _unparsed(raw: bytes, source: Source, place: _Place, reason: str, error: str,
              damaged: bool = False) -> Read:
    """A rejected record for input that could not be parsed: the raw bytes, made readable."""
    license = normalize_license(source.license)
    meta = {**place.meta(), "error": error}
    record = _record(id=f"{source.name}/{place.local_id}", meta=meta, source=source.name,
                     text=raw.decode("utf-8", "replace"), license=license,
                     language=source.language)
    return Read(_clean(record), reason, place.file, place.where, source.license, damaged, error)


def _encodable(record: dict) -> bool:
    try:
        for value in record.values():
            if isinstance(value, str):
                value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(record: dict) -> dict:
    """Replace what UTF-8 cannot hold, so that even a rejected record can be written."""
    return {k: v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else v
            for k, v in record.items()}


def _as_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return str(value)


def _json_default(value: object) -> object:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _language(value: str | None) -> str | None:
    """ISO 639-1 from `fr`, `fr-FR`, `fra_Latn` or `French`; None when not recognised."""
    if value is None:
        return None
    code = re.split(r"[_\-\s]", str(value).strip().lower())[0]
    if len(code) == 2 and code.isalpha():
        return code
    return _LANGUAGES.get(code)


def _utf8_error(data: bytes, e: UnicodeDecodeError) -> str:
    bad = data[e.start:e.start + 4]
    return (f"invalid UTF-8 at byte {e.start} ({bad!r}): {e.reason}; "
            "re-encode the file as UTF-8 (is it Latin-1 or cp1252?)")


# --- compressed streams -------------------------------------------------------------------


class _StreamError(Exception):
    """A compressed stream that ends early or does not decode; the reader adds file and line.

    `tail` is what was decompressed of the broken line before the damage.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.tail = b""


def _chunks(path: Path) -> Iterator[bytes]:
    """The decompressed bytes of a file, chosen by suffix (.gz, .zst or plain).

    A compressed file is checked whole first (decompressed, output dropped), then read:
    gzip checks a member's CRC, zstd a frame's checksum, only at its end, and corrupt data
    often still inflates, into lines that parse as JSON with the wrong text. So nothing of
    a member that fails is read: the bytes given are those of the members before it, or,
    in a file cut short, all that was there before the cut (no sign of corruption in it).
    Then the damage is raised as a `_StreamError`.
    """
    codec = _codec(path)
    if codec is None:
        with open(path, "rb") as f:
            yield from iter(lambda: f.read(CHUNK), b"")
        return
    trusted, damage = _check_stream(path, codec)
    given = 0
    for out, _ in _decompress(path, *codec):
        if given + len(out) >= trusted:
            yield out[: trusted - given]
            break
        yield out
        given += len(out)
    if damage is not None:
        raise damage


_Codec = tuple[Callable[[], object], type[Exception], str, str]


def _codec(path: Path) -> _Codec | None:
    """(new decompressor, its error, kind, the end mark) by suffix; None for a plain file."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return (lambda: zlib.decompressobj(wbits=31), zlib.error, "gzip",
                "the end-of-stream marker")
    if name.endswith(".zst"):
        return (lambda: zstandard.ZstdDecompressor().decompressobj(), zstandard.ZstdError,
                "zstd", "the end of the frame")
    return None


def _check_stream(path: Path, codec: _Codec) -> tuple[int, _StreamError | None]:
    """(how many decompressed bytes can be trusted, the damage after them or None)."""
    produced, verified = 0, 0
    try:
        for out, member_ended in _decompress(path, *codec):
            produced += len(out)
            if member_ended:
                verified = produced
    except _StreamError as e:
        if e.reason == "ingest:truncated":
            return produced, e
        e.args = (f"{e.args[0]}; the member that starts at byte {verified} of the "
                  "decompressed data cannot be trusted, so none of its lines is read",)
        return verified, e
    return produced, None


def _decompress(path: Path, new: Callable[[], object], error: type[Exception], kind: str,
                marker: str) -> Iterator[tuple[bytes, bool]]:
    """(output, a member ended here): member after member (concatenated .gz members,
    multi-frame .zst).

    Python's gzip module and zstandard's stream reader differ on a truncated file (one
    raises, the other just stops), so both go through the same explicit end-of-stream check.
    """
    with open(path, "rb") as f:
        stream, pending = new(), False
        for chunk in iter(lambda: f.read(CHUNK), b""):
            while chunk:
                pending = True
                try:
                    out = stream.decompress(chunk)
                except error as e:
                    raise _StreamError(f"ingest:corrupt_{kind}",
                                       f"corrupt {kind} data ({e})") from None
                if not stream.eof:
                    if out:
                        yield out, False
                    break
                yield out, True
                chunk, stream, pending = stream.unused_data, new(), False
    if pending:
        raise _StreamError("ingest:truncated",
                           f"truncated {kind} stream (file ends before {marker})")


def _lines(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bool]]:
    """(line, ended with a newline), split on b"\n" only: JSON escapes every other line
    break, so nothing else splits. A broken stream's partial line rides on its error."""
    pending: list[bytes] = []
    try:
        for chunk in chunks:
            parts = chunk.split(b"\n")
            if len(parts) == 1:
                pending.append(chunk)
                continue
            yield b"".join([*pending, parts[0]]), True
            for part in parts[1:-1]:
                yield part, True
            pending = [parts[-1]] if parts[-1] else []
    except _StreamError as e:
        e.tail = b"".join(pending)
        raise
    if pending:
        yield b"".join(pending), False
