"""Sources: a file or folder and its provenance (name, license, language, format, encoding),
from the recipe's `SourceSpec` and an optional `source.toml` sidecar in the folder (recipe values
win), with the files to read listed in order. What is wrong here is the configuration, not a
file, so it raises `IngestError` and stops the stage.

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
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fournil.ingest.charsets import encoding_name
from fournil.ingest.config import FORMATS, SUFFIXES, SourceSpec
from fournil.provenance.licenses import normalize_license

SIDECAR = "source.toml"


# Documentation that ships next to the documents (readme.md, PROVENANCE.md) is not a document.
HOUSEKEEPING = {"readme", "provenance", "license", "licence", "changelog"}


OPTIONAL_COLUMNS = ("url", "title", "author", "date", "language")


_LANGUAGES = {  # names and ISO 639-2/3 codes seen in corpora -> ISO 639-1
    "fra": "fr", "fre": "fr", "french": "fr", "francais": "fr", "français": "fr",
    "eng": "en", "english": "en", "deu": "de", "ger": "de", "german": "de",
    "spa": "es", "spanish": "es", "ita": "it", "italian": "it", "por": "pt",
    "portuguese": "pt", "nld": "nl", "dut": "nl", "dutch": "nl", "lat": "la", "latin": "la",
}


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
    return language_code(value) or value


def language_code(value: str | None) -> str | None:
    """ISO 639-1 from `fr`, `fr-FR`, `fra_Latn` or `French`; None when not recognised."""
    if value is None:
        return None
    code = re.split(r"[_\-\s]", str(value).strip().lower())[0]
    if len(code) == 2 and code.isalpha():
        return code
    return _LANGUAGES.get(code)


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


def format_of(path: Path, declared: str) -> str | None:
    if declared != "auto":
        return declared
    name = path.name.lower()
    for fmt, suffixes in SUFFIXES.items():
        if name.endswith(suffixes):
            return fmt
    return None


def _list_files(source: Source, include: list[str] | None) -> list[Path]:
    if source.path.is_file():
        if format_of(source.path, source.format) is None:
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
        fmt = format_of(p, source.format)
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
