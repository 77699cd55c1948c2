"""Readers: raw documents from JSONL (plain, .gz, .zst), JSON, Parquet, text, PDF and HTML.

A source is a file or a folder plus its provenance (name, license, language), taken from the
recipe's `SourceSpec` and from an optional `source.toml` sidecar in the folder; recipe values
win. Readers stream: JSONL line by line, Parquet batch by batch. Each input record becomes
one `Read`: a record in `DOC_SCHEMA` form and, when it cannot be used, a rejection reason
(`ingest:bad_json`, `ingest:bad_utf8`, `ingest:missing_text`, ...). A text, PDF or HTML
file is one document; one that gives no text is a rejected record too (`ingest:pdf_encrypted`,
`ingest:pdf_broken`, `ingest:pdf_no_text`, `ingest:html_no_content`, `ingest:binary`, ...:
see pdf.py and html.py). A problem with a whole file (truncated gzip, not Parquet, no text
column, empty file) raises `IngestError` naming the file and, where known, the line (JSONL,
1-based) or row (Parquet and JSON lists, 0-based).

Sidecar (`source.toml`), every key optional:

    name = "cligs-textbox/nouvelles19"      # the records' `source`
    license = "public domain"               # raw or SPDX; a record's own `license` wins
    language = "fr"
    format = "txt"                          # auto | jsonl | json | parquet | txt | pdf | html
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fournil.corpus.html import HtmlError, extract_html
from fournil.corpus.pdf import PdfError, extract_pdf
from fournil.provenance.licenses import normalize_license
from fournil.provenance.records import DOC_SCHEMA
from fournil.recipe import SourceSpec

SIDECAR = "source.toml"
FORMATS = ("jsonl", "json", "parquet", "txt", "pdf", "html")
SUFFIXES = {
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson"),
    "json": (".json",),
    "parquet": (".parquet",),
    "txt": (".txt", ".md"),
    "pdf": (".pdf",),
    "html": (".html", ".htm"),
}
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


class IngestError(ValueError):
    """An input that cannot be read as a whole; the message names the file and the place."""


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

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "format": self.format,
                "license": normalize_license(self.license) if self.license else None,
                "license_raw": self.license, "language": self.language,
                "files": len(self.files)}


@dataclass
class Read:
    """One input record: a document, or a rejected one when `reason` is set."""

    record: dict  # DOC_SCHEMA columns
    reason: str | None  # e.g. `ingest:bad_json`; None for a usable document
    file: Path
    where: str  # `path: line 12`, for messages
    license_raw: str | None  # the declared license string behind `record["license"]`


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
    "id_field": str, "fields": dict, "include": list, "metadata_csv": str,
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
        if fmt == "jsonl":
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


_UNPARSED = ("ingest:bad_utf8", "ingest:bad_json", "ingest:not_object")


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


def read_jsonl(path: Path, source: Source) -> Iterator[Read]:
    """One `Read` per non-blank line (blank lines are not records and are not counted)."""
    rel = source.relative(path)
    lines = _lines(_chunks(path))
    number, records, objects, with_text, first_keys = 0, 0, 0, 0, None
    while True:
        try:
            line = next(lines)
        except StopIteration:
            break
        except _StreamError as e:
            raise IngestError(f"{path}: line {number + 1}: {e}") from None
        number += 1
        if not line.strip():
            continue
        records += 1
        place = _Place(path, rel, line=number)
        obj = _load_json(line, place, source)
        if isinstance(obj, Read):
            yield obj
            continue
        if not isinstance(obj, dict):
            yield _not_object(obj, source, place)
            continue
        objects += 1
        first_keys = first_keys or list(obj)
        with_text += source.text_field in obj
        yield _from_fields(obj, source, place)
    if records == 0:
        raise IngestError(f"{path}: empty file (no JSON lines)")
    if objects == 0:
        raise IngestError(f"{path}: not JSONL: none of its {records} line(s) is a JSON object")
    if with_text == 0:
        raise IngestError(f"{path}: no record has the text field {source.text_field!r} "
                          f"(fields: {', '.join(first_keys)}); set text_field in the recipe "
                          f"or {SIDECAR}")


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
    JSONL for big inputs. A file that does not parse is one rejected record.
    """
    data = path.read_bytes()
    if not data.strip():
        raise IngestError(f"{path}: empty file")
    rel = source.relative(path)
    value = _load_json(data, _Place(path, rel), source)
    if isinstance(value, Read):
        yield value
    elif isinstance(value, dict):
        yield _from_fields(value, source, _Place(path, rel))
    elif isinstance(value, list):
        if not value:
            raise IngestError(f"{path}: empty JSON list")
        for i, item in enumerate(value):
            place = _Place(path, rel, row=i)
            is_object = isinstance(item, dict)
            yield _from_fields(item, source, place) if is_object else _not_object(item, source,
                                                                                  place)
    else:
        yield _not_object(value, source, _Place(path, rel))


_TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())


def read_parquet(path: Path, source: Source, batch_size: int = 1024) -> Iterator[Read]:
    """One `Read` per row, read in batches so that a big shard never sits in memory whole."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise IngestError(f"{path}: not a readable Parquet file ({e})") from None
    schema = parquet.schema_arrow
    if source.text_field not in schema.names:
        raise IngestError(f"{path}: no text column {source.text_field!r} (columns: "
                          f"{', '.join(schema.names)}); set text_field in the recipe or "
                          f"{SIDECAR}")
    text_type = schema.field(source.text_field).type
    if text_type not in _TEXT_TYPES and str(text_type) != "string_view":
        raise IngestError(f"{path}: text column {source.text_field!r} has type {text_type}, "
                          "expected a string")
    if parquet.metadata.num_rows == 0:
        raise IngestError(f"{path}: empty file (no rows)")
    rel, row = source.relative(path), 0
    batches = parquet.iter_batches(batch_size=batch_size)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            raise IngestError(f"{path}: row {row}: cannot read the rows from here on "
                              f"(corrupt or truncated Parquet: {e})") from None
        for obj in batch.to_pylist():
            yield _from_fields(obj, source, _Place(path, rel, row=row))
            row += 1


def read_text(path: Path, source: Source) -> Read:
    """A text or Markdown file as one document, its id the file's path without suffix.

    Read as bytes and decoded, so that NEL (U+0085), CR and other line breaks reach the
    record as they are in the file: neither universal newlines nor splitlines touch them.
    """
    data = path.read_bytes()
    place, reason, meta = _Place(path, source.relative(path)), None, {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        reason, text = "ingest:bad_utf8", data.decode("utf-8", "replace")
        place.line, meta["error"] = data.count(b"\n", 0, e.start) + 1, _utf8_error(data, e)
    text = text.removeprefix("\ufeff")  # a BOM is an encoding mark, not text
    if reason is None and not text.strip():
        reason = "ingest:empty_text"
    return _file_document(place, source, text, reason, {}, meta)


def read_pdf(path: Path, source: Source) -> Read:
    """A PDF file as one document: its text with headings, paragraphs and lists (pdf.py)."""
    place = _Place(path, source.relative(path))
    try:
        pdf = extract_pdf(path)
    except PdfError as e:
        return _file_document(place, source, "", e.reason, {}, {"error": str(e)})
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
        page = extract_html(path.read_bytes())
    except HtmlError as e:
        return _file_document(place, source, "", e.reason, {}, {"error": str(e)})
    meta = {"encoding": page.encoding}
    if page.language:
        meta["lang"] = page.language
    return _file_document(place, source, page.text, None,
                          {"title": page.title, "url": page.url}, meta)


def _file_document(place: _Place, source: Source, text: str, reason: str | None,
                   columns: dict[str, str | None], meta: dict) -> Read:
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
    return Read(record, reason, place.file, place.where, raw_license)


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


def _unparsed(raw: bytes, source: Source, place: _Place, reason: str, error: str) -> Read:
    """A rejected record for input that could not be parsed: the raw bytes, made readable."""
    license = normalize_license(source.license)
    meta = {**place.meta(), "error": error}
    record = _record(id=f"{source.name}/{place.local_id}", meta=meta, source=source.name,
                     text=raw.decode("utf-8", "replace"), license=license,
                     language=source.language)
    return Read(_clean(record), reason, place.file, place.where, source.license)


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
    """A compressed stream that cannot be decoded; the reader adds file and line."""


def _chunks(path: Path) -> Iterator[bytes]:
    """The decompressed bytes of a file, chosen by suffix (.gz, .zst or plain)."""
    with open(path, "rb") as f:
        raw = iter(lambda: f.read(CHUNK), b"")
        name = path.name.lower()
        if name.endswith(".gz"):
            yield from _decompress(raw, lambda: zlib.decompressobj(wbits=31), zlib.error,
                                   "gzip", "the end-of-stream marker")
        elif name.endswith(".zst"):
            yield from _decompress(raw, lambda: zstandard.ZstdDecompressor().decompressobj(),
                                   zstandard.ZstdError, "zstd", "the end of the frame")
        else:
            yield from raw


def _decompress(raw: Iterator[bytes], new, error: type[Exception], kind: str,
                marker: str) -> Iterator[bytes]:
    """Decompress member after member (concatenated .gz members, multi-frame .zst).

    Python's gzip module and zstandard's stream reader differ on a truncated file (one
    raises, the other just stops), so both go through the same explicit end-of-stream check.
    """
    stream, pending = new(), False
    for chunk in raw:
        while chunk:
            pending = True
            try:
                out = stream.decompress(chunk)
            except error as e:
                raise _StreamError(f"corrupt {kind} data ({e})") from None
            if out:
                yield out
            if not stream.eof:
                break
            chunk, stream, pending = stream.unused_data, new(), False
    if pending:
        raise _StreamError(f"truncated {kind} stream (file ends before {marker})")


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split on b"\\n" only: JSON escapes every other line break, so nothing else splits."""
    pending: list[bytes] = []
    for chunk in chunks:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            pending.append(chunk)
            continue
        yield b"".join([*pending, parts[0]])
        yield from parts[1:-1]
        pending = [parts[-1]] if parts[-1] else []
    if pending:
        yield b"".join(pending)
