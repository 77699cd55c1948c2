"""Main content of HTML pages, as Markdown-ish plain text, with title and canonical URL.

trafilatura (Apache-2.0) finds the main content and leaves navigation, headers, footers,
sidebars, cookie banners and scripts out; FineWeb's text was extracted with it (through
datatrove). It runs offline, on the page alone. Its content tree is rendered here rather
than with its Markdown output, which escapes punctuation (`\\[A\\]`) and keeps emphasis
marks that are noise in training text:

- `<h2>` -> `## heading`, paragraphs separated by a blank line;
- list items -> `- item` (`1. item` in ordered lists), nested lists indented;
- table rows -> cells joined by ` | `, one row per line; quotes -> `> `; code blocks verbatim.

The bytes are decoded here, not by trafilatura (which guesses from the bytes and ignores the
page's declaration), by the decoder text files use (charsets.py): a byte order mark wins,
then an encoding forced for the source, then valid UTF-8 (whatever the page claims: a stale
`iso-8859-1` on a UTF-8 page is common), then the `<meta charset>` / `http-equiv` / XML
declaration (`iso-8859-1` and `ascii` read as windows-1252, as browsers do), then detection,
which takes windows-1252 for Western pages and finds Cyrillic, Greek or CJK ones.

`extract_html` raises `HtmlNoContentError` (`ingest:html_no_content`), `HtmlBrokenError`
(`ingest:html_broken`), `HtmlUndecodableError` (`ingest:undecodable`) or `NotHtmlError`
(`ingest:binary`), each with a `reason` for the ingest stage's rejected records.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlparse

import trafilatura

from fournil.ingest.charsets import WESTERN, UndecodableError, decode, looks_binary

if TYPE_CHECKING:  # trafilatura's trees are lxml's
    from lxml import etree

_DECLARED = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([\w.:-]+)|<\?xml[^>]*?encoding\s*=\s*["']([\w.:-]+)""",
    re.IGNORECASE)
# Browsers read these labels as windows-1252 (WHATWG Encoding), which only adds characters.
_AS_CP1252 = {"latin_1", "iso8859_1", "ascii", "cp1252"}
_SPACES = re.compile(r"[ \t\n\r\f\v]+")  # ASCII whitespace: no-break spaces are typography


class HtmlError(ValueError):
    """An HTML file that gives no document; `reason` is the ingest rejection code."""

    reason = "ingest:html_no_content"


class HtmlNoContentError(HtmlError):
    """Empty, or nothing left once navigation and boilerplate are removed."""


class HtmlBrokenError(HtmlError):
    """Not parseable as HTML, or nested too deeply to render."""

    reason = "ingest:html_broken"


class HtmlUndecodableError(HtmlError):
    """Bytes that no encoding reads cleanly (see charsets.py)."""

    reason = "ingest:undecodable"


class NotHtmlError(HtmlError):
    """Binary data (an image, an archive, a PDF) in a file named like a page."""

    reason = "ingest:binary"


@dataclass
class HtmlText:
    """The main content of a page with what the page says about itself."""

    text: str
    title: str | None  # <title>
    url: str | None  # <link rel=canonical>, else og:url, else the URL given
    encoding: str  # what the bytes were decoded as
    language: str | None  # <html lang>, as declared


def extract_html(raw: bytes, url: str | None = None, encoding: str | None = None) -> HtmlText:
    """The main content of the page in `raw` (see the module docstring).

    `url` is where the page comes from, when known: relative canonical links resolve
    against it, and it is the page's URL when the page does not give one. `encoding`, when
    given, is used instead of the page's declaration and of detection.
    """
    if looks_binary(raw):
        raise NotHtmlError(f"binary data, not a page (starts with {raw[:16]!r})")
    html, encoding = decode_html(raw, encoding)
    if not html.strip():
        raise HtmlNoContentError("empty file")
    tree = trafilatura.load_html(html)
    if tree is None:
        raise HtmlBrokenError("not parseable as HTML")
    document = trafilatura.bare_extraction(
        tree, url=url, include_comments=False, include_tables=True, include_formatting=False,
        # No fallback extractors: their "take all the text" baseline turns a page of links
        # (a menu, a site map) into a document; precision over recall for training text.
        favor_precision=True, fast=True,
    )
    try:
        text = render(document.body) if document is not None else ""
    except RecursionError:
        raise HtmlBrokenError("content nested too deeply to render") from None
    if not text.strip():
        raise HtmlNoContentError("no main content (navigation, forms or scripts only?)")
    return HtmlText(text=text, title=_title(tree), url=_url(tree, url), encoding=encoding,
                    language=(tree.get("lang") or "").strip() or None)


def decode_html(raw: bytes, forced: str | None = None) -> tuple[str, str]:
    """(text, encoding): BOM, forced, valid UTF-8, declared, detected (see charsets.py)."""
    try:
        decoded = decode(raw, forced=forced, declared=_declared_encoding(raw[:4096]))
    except UndecodableError as e:
        error = NotHtmlError if e.reason == NotHtmlError.reason else HtmlUndecodableError
        raise error(str(e)) from None
    return decoded.text, decoded.encoding


def _declared_encoding(head: bytes) -> str | None:
    match = _DECLARED.search(head)
    if match is None:
        return None
    label = (match.group(1) or match.group(2)).decode("ascii")
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    if name.startswith("utf"):  # UTF-8 failed already, and UTF-16/32 pages have a BOM
        return None
    return WESTERN if name.replace("-", "_") in _AS_CP1252 else name


def _title(tree: etree._Element) -> str | None:
    title = tree.find(".//title")
    text = " ".join("".join(title.itertext()).split()) if title is not None else ""
    return text or None


def _url(tree: etree._Element, base: str | None) -> str | None:
    """The page's own URL: canonical link, else og:url, made absolute against `base`."""
    found = [link.get("href") for link in tree.iter("link")
             if "canonical" in (link.get("rel") or "").lower().split()]
    found += [meta.get("content") for meta in tree.iter("meta")
              if (meta.get("property") or meta.get("name") or "").lower() == "og:url"]
    for href in (h.strip() for h in found if h and h.strip()):
        absolute = urljoin(base, href) if base else href
        if urlparse(absolute).scheme in ("http", "https"):
            return absolute
    return base


# --- rendering trafilatura's content tree -------------------------------------------------


def render(body: etree._Element) -> str:
    """trafilatura's content tree (`head`, `p`, `list`/`item`, `table`, ...) as text."""
    blocks = [_block(child) for child in body]
    if body.text and body.text.strip():
        blocks.insert(0, _clean(body.text))
    return "\n\n".join(b for b in blocks if b.strip())


def _block(element: etree._Element) -> str:
    tag = element.tag
    if tag == "head":
        rend = element.get("rend") or ""
        level = int(rend[1]) if re.fullmatch(r"h[1-6]", rend) else 2
        text = _inline(element).replace("\n", " ")
        return f"{'#' * level} {text}" if text else ""
    if tag == "list":
        return "\n".join(_items(element, 0))
    if tag == "table":
        rows = (" | ".join(c for c in (_inline(cell) for cell in row) if c)
                for row in element.iter("row"))
        return "\n".join(r for r in rows if r)
    if tag == "quote":
        inner = "\n\n".join(b for b in (_block(c) for c in element) if b) \
            if len(element) and all(c.tag in ("p", "list", "head") for c in element) \
            else _inline(element)
        return "\n".join(f"> {line}".rstrip() for line in inner.splitlines())
    if tag == "code":
        return "".join(element.itertext()).strip("\n").rstrip()
    return _inline(element)


def _items(element: etree._Element, depth: int) -> list[str]:
    """One line per item, `- ` or `1. `, nested lists indented under their item."""
    ordered = element.get("rend") == "ol"
    lines: list[str] = []
    items = [child for child in element if child.tag == "item"]
    for number, item in enumerate(items, start=1):
        marker = f"{number}." if ordered else "-"
        text = _inline(item, skip="list").replace("\n", " ")
        lines.append(f"{'  ' * depth}{marker} {text}".rstrip())
        for sub in item:
            if sub.tag == "list":
                lines += _items(sub, depth + 1)
    return lines


def _inline(element: etree._Element, skip: str | None = None) -> str:
    """The element's text with whitespace collapsed; `<lb/>` is a line break."""
    return "\n".join(_clean(line) for line in _pieces(element, skip).split("\n")).strip()


def _pieces(element: etree._Element, skip: str | None) -> str:
    parts = [_SPACES.sub(" ", element.text or "")]
    for child in element:
        if child.tag == "lb":
            parts.append("\n")
        elif child.tag != skip:
            parts.append(_pieces(child, skip))
        parts.append(_SPACES.sub(" ", child.tail or ""))
    return "".join(parts)


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()
