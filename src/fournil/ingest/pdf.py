"""Text from PDF files, with the page structure recovered as Markdown-ish plain text.

PDFium (Chrome's PDF engine, through `pypdfium2`: Apache-2.0 / BSD-3-Clause) reads the file;
it is 10-20x faster than the pure-Python extractors (pypdf, pdfminer.six) and opens more
damaged files. PDFium gives characters with their font size, font name and position; the
structure is rebuilt from that, line by line:

- a line in a font clearly bigger than the body text is a heading (`# `, `## `, ... by size);
- a line starting with a bullet is a list item (`- item`), with its hanging continuation lines;
  a numbered item (`1.`, `a)`) keeps its number;
- lines of one paragraph are joined, and a word split at a line end is joined again
  (`tempé-` + `rature` -> `température`); a new paragraph starts after a vertical gap, at a
  first-line indent, or after a short line that ends a sentence;
- lines in a monospaced font are code: kept line by line, with their indentation;
- running headers and footers (the same line, digits aside, at the top or bottom of several
  pages) and bare page numbers are dropped;
- a page break is a paragraph break, unless the sentence visibly runs on to the next page.

`extract_pdf` raises `PdfEncryptedError`, `PdfBrokenError`, `PdfNoTextError` or
`NotPdfError`, each with a `reason` code for the ingest stage's rejected records and a
message that says what is wrong (the caller names the file).
"""

from __future__ import annotations

import ctypes
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from fournil.ingest.pdf_layout import SOFT_HYPHEN, Line, render

# Average visible characters per page under which a PDF counts as scanned images: a few stray
# characters (a stamp, a page number) on image pages are not a text layer.
MIN_CHARS_PER_PAGE = 16
_MONO_FONT = re.compile(r"mono|courier|consol|cmtt|typewriter|code", re.IGNORECASE)
_BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi|cmbx", re.IGNORECASE)
_PAGE_NUMBER = re.compile(r"[-–—(\[ ]*(page|p\.)? ?#( ?(/|sur|of|de) ?#)?[-–—)\] ]*")
_FILE_NAME_TITLE = re.compile(r"\.(docx?|odt|rtf|pdf|tex|dvi|indd|qxd|ps|pptx?|xlsx?)$", re.I)
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi",
                            "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"})


class PdfError(ValueError):
    """A PDF that gives no document; `reason` is the ingest rejection code."""

    reason = "ingest:pdf_broken"


class PdfBrokenError(PdfError):
    """Truncated, corrupt or otherwise unreadable."""


class PdfEncryptedError(PdfError):
    """Needs a password (or an unsupported security handler) to be opened."""

    reason = "ingest:pdf_encrypted"


class PdfNoTextError(PdfError):
    """No text layer: scanned images, or empty pages."""

    reason = "ingest:pdf_no_text"


class NotPdfError(PdfError):
    """Not a PDF at all: no `%PDF-` header (random bytes, an image, an HTML error page)."""

    def __init__(self, message: str, binary: bool) -> None:
        super().__init__(message)
        self.reason = "ingest:binary" if binary else "ingest:not_pdf"


@dataclass
class PdfText:
    """The text of a PDF with what its metadata says about it."""

    text: str
    title: str | None
    author: str | None
    pages: int
    pages_without_text: int  # image-only or blank pages


def extract_pdf(path: str | Path) -> PdfText:
    """The text of the PDF at `path` as Markdown-ish plain text (see the module docstring)."""
    path = Path(path)
    _check_envelope(path)
    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as e:
        if e.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise PdfEncryptedError(f"encrypted: a password is needed ({e})") from None
        raise PdfBrokenError(f"PDFium cannot open it ({e})") from None
    try:
        info = pdf.get_metadata_dict(skip_empty=True)
        pages = [_page_lines(pdf, i) for i in range(len(pdf))]
    except pdfium.PdfiumError as e:
        raise PdfBrokenError(f"cannot read its pages ({e})") from None
    finally:
        pdf.close()
    empty = sum(1 for lines in pages if not lines)
    pages = _drop_running_lines(pages)
    text = render(pages)
    chars = len(re.sub(r"\s", "", text))
    if chars < MIN_CHARS_PER_PAGE * max(len(pages), 1):
        raise PdfNoTextError(f"almost no text: {chars} characters on {len(pages)} page(s), "
                             f"{empty} without any (scanned images?); run OCR on it first")
    return PdfText(text=text, title=_info(info, "Title"), author=_info(info, "Author"),
                   pages=len(pages), pages_without_text=empty)


def _check_envelope(path: Path) -> None:
    """Reject what is not a whole PDF before PDFium tries to repair it into a partial one."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1024)
        f.seek(max(0, size - 1024))
        tail = f.read()
    if not head:
        raise PdfBrokenError("empty file (0 bytes)")
    if b"%PDF-" not in head:  # readers accept junk before the header, within 1 KiB
        binary = b"\0" in head or any(b < 9 or 13 < b < 32 for b in head[:256])
        kind = f"{len(head)} bytes of binary data" if binary else f"starts with {head[:40]!r}"
        raise NotPdfError(f"not a PDF: no %PDF- header ({kind})", binary=binary)
    if b"%%EOF" not in tail:  # the marker ends every complete PDF (and each incremental update)
        raise PdfBrokenError("truncated: no %%EOF marker at the end of the file")


def _info(info: dict, key: str) -> str | None:
    value = " ".join(str(info.get(key, "")).split())
    if not value or _FILE_NAME_TITLE.search(value) or value.lower() in ("untitled", "unknown"):
        return None  # `Microsoft Word - rapport.docx` is the file, not the title
    return value


# --- lines --------------------------------------------------------------------------------


def _page_lines(pdf: pdfium.PdfDocument, index: int) -> list[Line]:
    page = pdf[index]
    textpage = page.get_textpage()
    try:
        return _lines(textpage)
    finally:
        textpage.close()
        page.close()


def _lines(textpage: pdfium.PdfTextPage) -> list[Line]:
    """Visual lines: PDFium's generated line breaks, and its line-end hyphen marks, split."""
    raw = textpage.raw
    count = textpage.count_chars()
    # Character by character rather than `get_text_range`, whose text can skip or insert
    # characters: the indices must match the boxes and font sizes asked for below.
    chars = [_char(pdfium_c.FPDFText_GetUnicode(raw, i)) for i in range(count)]
    lines, start = [], 0
    for i, ch in enumerate([*chars, "\n"]):
        if ch in ("\r", "\n", SOFT_HYPHEN):
            line = _line(textpage, chars, start, i, hyphenated=ch == SOFT_HYPHEN)
            if line is not None:
                lines.append(line)
            start = i + 1
    return lines


def _char(code: int) -> str:
    """A code point from the PDF's own map; what UTF-8 cannot hold becomes U+FFFD."""
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:  # broken ToUnicode maps
        return "\ufffd"
    return chr(code)


def _line(textpage: pdfium.PdfTextPage, chars: list[str], start: int, end: int,
          hyphenated: bool) -> Line | None:
    visible = [i for i in range(start, end) if not chars[i].isspace()]
    if not visible:
        return None
    first, last = visible[0], visible[-1]
    middle = visible[len(visible) // 2]
    raw = textpage.raw
    sizes = sorted(pdfium_c.FPDFText_GetFontSize(raw, i) for i in (first, middle, last))
    fonts = [_font_name(raw, i) for i in (first, last)]
    left, bottom, _, _ = textpage.get_charbox(first, loose=True)
    _, _, right, _ = textpage.get_charbox(last, loose=True)
    text = "".join(chars[first:last + 1]).translate(_LIGATURES)
    return Line(text=text, size=sizes[1], x0=left, x1=right, bottom=bottom,
                 bold=all(_BOLD_FONT.search(f) or _weight(raw, i) >= 600
                          for f, i in zip(fonts, (first, last), strict=True)),
                 mono=all(_MONO_FONT.search(f) for f in fonts), hyphenated=hyphenated)


def _font_name(raw: ctypes.c_void_p, index: int) -> str:
    buffer = ctypes.create_string_buffer(128)
    flags = ctypes.c_int()
    pdfium_c.FPDFText_GetFontInfo(raw, index, buffer, len(buffer), ctypes.byref(flags))
    return buffer.value.decode("utf-8", "replace")


def _weight(raw: ctypes.c_void_p, index: int) -> int:
    return pdfium_c.FPDFText_GetFontWeight(raw, index)


def _running_key(text: str) -> str:
    return " ".join(re.sub(r"\d+", "#", text.lower()).split())


def _drop_running_lines(pages: list[list[Line]]) -> list[list[Line]]:
    """Pages without their running headers/footers and bare page numbers.

    A running line is one of the two top or bottom lines of a page whose text, digits aside,
    is at the top or bottom of another page too (`Chapitre 2 : Le levain 14`).
    """
    def edges(lines: list[Line]) -> list[Line]:
        by_height = sorted(lines, key=lambda line: -line.bottom)
        return by_height[:2] + by_height[-2:]

    seen = Counter(key for lines in pages for key in {_running_key(x.text) for x in edges(lines)})
    kept = []
    for lines in pages:
        running = {id(x) for x in edges(lines) if seen[_running_key(x.text)] >= 2
                   or _PAGE_NUMBER.fullmatch(_running_key(x.text))}
        kept.append([x for x in lines if id(x) not in running])
    return kept


