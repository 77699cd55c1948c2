"""Bytes to text for text files and HTML pages: what encoding they are in, and the text.

One order for both, the WHATWG's for web pages, which suits loose text files as well:

1. a byte order mark wins (UTF-8, UTF-16, UTF-32), even over an encoding the caller forces,
   as it does over an HTTP header in browsers; it is an encoding mark, never part of the text;
2. an encoding forced for the source (`encoding` in the recipe or source.toml, `--encoding`)
   is used as it is: bytes it cannot decode make the file undecodable, not a guess;
3. valid UTF-8 is UTF-8, whatever a page declares (a stale `iso-8859-1` on a UTF-8 page is
   common). This is the fast path: no detector runs. Bytes with NUL in them skip it, since
   they are UTF-16 without a BOM (or binary data), never text in UTF-8;
4. the encoding a page declares (`<meta charset>`, XML declaration), when its bytes decode;
5. detection by charset-normalizer (the detector `requests` uses): each code page's reading is
   scored for "chaos" (characters no text has side by side) and language coherence.

Its ranking cannot tell the Western code pages apart on French: on clean French text it often
ranks cp1250 or cp1257 first (`élève` read as `élčve`), or cp850, cp775, ISO-8859-14 on a
few lines (its language coherence scores them higher than the right reading), and a
multi-byte guess (Big5) wins over every single-byte page on a few words (`pâte`). So
windows-1252 (cp1252: Latin-1 plus `œ`, `€`, curly quotes and dashes in 0x80-0x9F, which is
how browsers read both labels) is taken whenever its reading is about as clean as the
detector's best (chaos within `MARGIN`): Latin-1 files come out right too, since cp1252 and
Latin-1 agree on every byte that Latin-1 text uses (a C1 control such as NEL, 0x85, reads
as `…`, as in browsers). Another page wins where the detector sees a clearly cleaner text:
Cyrillic, Greek, CJK, Arabic. Central European text, which the detector finds about as clean
in cp1252, is told apart here: its letters in 0xA0-0xBF read there as symbols inside words
(`po³udnie` for `południe`, `¾lu»ouèký` for `žluťoučký`), which no Western text has.

Limits, where the source's encoding must be forced: Turkish in cp1254 reads as cp1252 with
Icelandic letters (`ý` for `ı`, `þ` for `ş`, `ð` for `ğ`); ISO-8859-2 and cp1250 differ on a
few letters (`š`, `ž`, `ť`) the detector does not always tell apart; and a few short lines
of accented text can score above the detector's chaos threshold in every reading.

What no encoding reads cleanly raises `UndecodableError` (`ingest:undecodable`) with the
detector's finding; binary data (NUL bytes, control characters) raises `BinaryDataError`
(`ingest:binary`).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from charset_normalizer import from_bytes
from charset_normalizer.md import mess_ratio

WESTERN = "cp1252"
THRESHOLD = 0.2  # charset-normalizer's own: a reading with more chaos than this is no reading
MARGIN = 0.1  # measured: correct French, 100 characters, can score 0.08 above a wrong page
BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CONTROLS = frozenset(range(32)) - frozenset(b"\t\n\r\f\v\x1b")
# cp1252 symbols whose bytes are letters in cp1250, ISO-8859-2 and the Baltic pages, between
# two letters: `ł` -> `³`, `ą` -> `¹`, `ż` -> `¿`, `ť` -> `»`, `ž` -> `¾`.
_SYMBOL_IN_WORD = re.compile(r"(?<=[^\W\d_])[¡¢£¤¥¦§¨©«¬®¯±³¶¸¹»¼½¾¿](?=[^\W\d_])")


class UndecodableError(ValueError):
    """Bytes that no encoding decodes cleanly; `finding` says what the detector saw."""

    reason = "ingest:undecodable"

    def __init__(self, message: str, finding: dict | None = None) -> None:
        super().__init__(message)
        self.finding = finding or {}


class BinaryDataError(UndecodableError):
    """An image, an archive or other binary data in a file named like text."""

    reason = "ingest:binary"


@dataclass
class Decoded:
    text: str
    encoding: str  # as Python's codec registry names it: utf-8, utf-16, cp1252, koi8-r


def encoding_name(label: str) -> str:
    """The codec's canonical name (`latin-1` -> `iso8859-1`); LookupError when unknown."""
    return codecs.lookup(label).name


def decode(raw: bytes, forced: str | None = None, declared: str | None = None) -> Decoded:
    """The text in `raw` and its encoding, in the order of the module docstring."""
    for bom, encoding in BOMS:
        if raw.startswith(bom):
            return _checked(_strict(raw, encoding, "its byte order mark says"),
                            encoding.removesuffix("-sig"))
    if forced is not None:
        name = encoding_name(forced)
        codec = "utf-8-sig" if name == "utf-8" else name
        return _checked(_strict(raw, codec, "forced for the source"), name)
    if b"\0" not in raw:
        try:
            return Decoded(raw.decode("utf-8"), "utf-8")
        except UnicodeDecodeError:
            pass
    if declared is not None:
        try:
            return _checked(raw.decode(declared), encoding_name(declared))
        except (UnicodeError, LookupError):  # a wrong declaration, or `charset=base64`
            pass
    return _checked(*_detect(raw))


def looks_binary(raw: bytes) -> bool:
    """NUL bytes or many control characters early on (a file with a BOM is text)."""
    if raw.startswith(tuple(bom for bom, _ in BOMS)):
        return False
    head = raw[:8192]
    return b"\0" in head or sum(b in _CONTROLS for b in head) > 0.05 * len(head)


def _strict(raw: bytes, codec: str, why: str) -> str:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UndecodableError(f"not valid {codec.removesuffix('-sig')} ({why}): {e.reason} "
                               f"at byte {e.start} ({raw[e.start:e.start + 4]!r}), line {line}",
                               {"encoding": codec, "byte": e.start, "line": line}) from None


def _checked(text: str, encoding: str) -> Decoded:
    """Text with NUL or many control characters is binary data that happened to decode."""
    head = text[:8192]
    if "\0" in head or sum(ord(c) in _CONTROLS for c in head) > 0.05 * len(head):
        raise BinaryDataError(f"binary data, not text (decoded as {encoding}, it holds NUL or "
                              f"control characters: {head[:16]!r})", {"encoding": encoding})
    return Decoded(text, encoding)


def _detect(raw: bytes) -> tuple[str, str]:
    """(text, encoding) by charset-normalizer, windows-1252 first where it reads as well."""
    matches = from_bytes(raw, threshold=THRESHOLD)
    best = matches.best()
    western, finding = _western(raw, matches, best)
    if western is not None:
        return western, WESTERN
    if best is not None:
        try:
            return raw.decode(best.encoding), encoding_name(best.encoding)
        except UnicodeDecodeError as e:  # the detector reads samples of big files
            finding["best"] = {"encoding": best.encoding, "chaos": round(best.chaos, 3),
                               "error": f"{e.reason} at byte {e.start}"}
    if looks_binary(raw):
        raise BinaryDataError(f"binary data, not text (starts with {raw[:16]!r})", finding)
    seen = ("; best reading " + _describe(finding["best"])) if "best" in finding else ""
    raise UndecodableError(f"no encoding reads it cleanly: charset-normalizer found no reading "
                           f"under chaos {THRESHOLD}{seen}; {_describe(finding)}; set the "
                           "source's encoding if you know it", finding)


def _western(raw: bytes, matches, best) -> tuple[str | None, dict]:
    """The cp1252 reading when it is about as clean as the best, with why (not)."""
    try:
        text = raw.decode(WESTERN)
    except UnicodeDecodeError as e:
        return None, {"encoding": WESTERN, "error": f"byte {raw[e.start:e.start + 1]!r} at "
                                                     f"{e.start} is undefined in {WESTERN}"}
    # The detector merges code pages that read the bytes the same way into one match.
    same = next((m for m in matches if WESTERN in m.could_be_from_charset), None)
    # It skips single-byte pages once a multi-byte one fits: score cp1252 here, then.
    chaos = same.chaos if same is not None else mess_ratio(text, maximum_threshold=1.0)
    finding = {"encoding": WESTERN, "chaos": round(chaos, 3)}
    glued = len(_SYMBOL_IN_WORD.findall(text))
    if glued and glued >= 0.01 * sum(not c.isascii() for c in text):
        finding["symbols_in_words"] = glued
        return None, finding
    if best is None:
        return (text if chaos <= THRESHOLD else None), finding
    return (text if chaos <= best.chaos + MARGIN else None), finding


def _describe(finding: dict) -> str:
    if "error" in finding:
        return f"as {finding['encoding']}: {finding['error']}"
    return f"as {finding['encoding']}: chaos {finding['chaos']:.2f}"
