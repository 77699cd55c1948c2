"""Records: what a reader makes of its input, one `Read` per record (a document in
`DOC_SCHEMA` form, or a rejected one with its reason), with the provenance columns filled from
the record, the source and its metadata CSV, and everything else kept in `meta`."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fournil.ingest.sources import OPTIONAL_COLUMNS, Source, language_code
from fournil.provenance.licenses import normalize_license
from fournil.provenance.records import DOC_SCHEMA

# Where the optional columns are found in records that do not say (FineWeb, Common Corpus).
ALIASES = {
    "url": ("url",), "title": ("title",), "author": ("author", "creator"),
    "date": ("date",), "language": ("language", "lang"), "license": ("license",),
}


ID_ALIASES = ("id", "identifier")


# File-level rejections of text, PDF and HTML files that mean the file is damaged (an
# encrypted PDF or a page of navigation only is whole, just not usable).
DAMAGE = frozenset({"ingest:undecodable", "ingest:binary", "ingest:pdf_broken", "ingest:not_pdf",
                    "ingest:html_broken", "ingest:empty_file"})


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


@dataclass
class Place:
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


def file_document(place: Place, source: Source, text: str, reason: str | None,
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
    language = language_code(found.pop("language", None)) or source.language
    record = document_record(id=f"{source.name}/{place.rel.rsplit('.', 1)[0]}", text=text,
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


def from_fields(obj: dict, source: Source, place: Place) -> Read:
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
    if language is not None and language_code(language) is None:
        meta["language_raw"] = language
    language = language_code(language) if language is not None else source.language
    extra = {k: v for k, v in obj.items() if k not in used and v is not None}
    if extra:
        meta["extra"] = extra

    text, reason = _text(obj.get(source.text_field))
    record = document_record(id=f"{source.name}/{local_id or place.local_id}", text=text,
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


def document_record(meta: dict, **columns: object) -> dict:
    record = {name: columns.get(name) for name in DOC_SCHEMA.names}
    record["meta"] = json.dumps(meta, ensure_ascii=False, default=_json_default)
    return record


def unparsed(raw: bytes, source: Source, place: Place, reason: str, error: str,
              damaged: bool = False) -> Read:
    """A rejected record for input that could not be parsed: the raw bytes, made readable."""
    license = normalize_license(source.license)
    meta = {**place.meta(), "error": error}
    record = document_record(id=f"{source.name}/{place.local_id}", meta=meta, source=source.name,
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


def utf8_error(data: bytes, e: UnicodeDecodeError) -> str:
    bad = data[e.start:e.start + 4]
    return (f"invalid UTF-8 at byte {e.start} ({bad!r}): {e.reason}; "
            "re-encode the file as UTF-8 (is it Latin-1 or cp1252?)")
