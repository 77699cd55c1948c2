"""From the positioned lines of a PDF's pages to Markdown-ish text: headings by font size,
paragraphs joined (and words split at a line end joined again), list items with their
continuation lines, code kept line by line. pdf.py reads the lines with PDFium."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

HEADING_RATIO = 1.15  # a font this much bigger than the body text makes a heading
BULLETS = "•◦▪▫●○■□‣⁃∙·–—-*"
_NUMBERED = re.compile(r"(\(?\d{1,3}[.)]|\(?[a-z][.)])\s")
_SENTENCE_END = tuple(".!?:;…»”\")")
_HYPHENS = ("-", "\u00ad", "\u2010")
SOFT_HYPHEN = "\x02"  # PDFium's mark for a hyphen it found at the end of a line
_DOT_LEADER = re.compile(r"\s*(?:\.\s?){4,}\s*")  # `Introduction . . . . . 1` in a contents page


@dataclass
class Line:
    """One visual line of text with what the layout heuristics need."""

    text: str
    size: float  # font size in points (median of three characters)
    x0: float
    x1: float
    bottom: float  # PDF coordinates: y grows upwards
    bold: bool
    mono: bool
    hyphenated: bool = False  # ends with a hyphen PDFium removed (the word goes on)


@dataclass
class _Block:
    kind: str  # heading | paragraph | item | code
    lines: list[Line]
    level: int = 0  # headings: 1 for the biggest font


def render(pages: list[list[Line]]) -> str:
    lines = [x for page in pages for x in page]
    if not lines:
        return ""
    body = _body_size(lines)
    heading_sizes = sorted({round(x.size * 2) / 2 for x in lines if x.size >= body * HEADING_RATIO},
                           reverse=True)
    levels = {size: min(i + 1, 6) for i, size in enumerate(heading_sizes)}
    step = _line_step(lines, body)
    bold_headings = sum(x.bold for x in lines) < len(lines) / 2  # not when all text is bold
    blocks: list[_Block] = []
    for page in pages:
        page_blocks = _blocks(page, levels, step, bold_headings)
        if blocks and page_blocks and _runs_on(blocks[-1], page_blocks[0]):
            blocks[-1].lines += page_blocks.pop(0).lines
        blocks += page_blocks
    return "\n\n".join(_merge_items([_format(b) for b in blocks], blocks)).strip()


def _body_size(lines: list[Line]) -> float:
    """The font size that holds the most characters: the body text's."""
    sizes: Counter[float] = Counter()
    for x in lines:
        sizes[round(x.size * 2) / 2] += len(x.text)
    return sizes.most_common(1)[0][0]


def _line_step(lines: list[Line], body: float) -> float:
    """The usual distance between two baselines of body text."""
    steps = [a.bottom - b.bottom for a, b in pairwise(lines)
             if abs(a.size - body) < 0.5 and abs(b.size - body) < 0.5
             and 0.8 * body <= a.bottom - b.bottom <= 2.5 * body]
    return statistics.median(steps) if steps else 1.2 * body


def _kind(line: Line, levels: dict[float, int]) -> tuple[str, int]:
    size = round(line.size * 2) / 2
    if size in levels and len(line.text) <= 200:
        return "heading", levels[size]
    if line.mono:  # before items: `-- comment` or `* p` in code are not bullets
        return "code", 0
    if _bullet(line.text) is not None or _NUMBERED.match(line.text):
        return "item", 0
    return "paragraph", 0


def _bullet(text: str) -> str | None:
    """The item's text when the line starts with a bullet, else None."""
    if len(text) > 1 and text[0] in BULLETS and (text[1] == " " or text[0] not in "-*–—"):
        return text[1:].strip()
    return None


def _blocks(page: list[Line], levels: dict[float, int], step: float,
            bold_headings: bool) -> list[_Block]:
    edges: dict[tuple[int, int], float] = {}

    def right_edge(line: Line) -> float:
        """The right edge of the column the line is in (two columns are two edges)."""
        key = (round(line.x0), round(line.size))  # few margins and indents: few keys
        if key not in edges:
            edges[key] = max(x.x1 for x in page if abs(x.x0 - line.x0) < 3 * line.size)
        return edges[key]

    blocks: list[_Block] = []
    for line in page:
        kind, level = _kind(line, levels)
        last = blocks[-1] if blocks else None
        if last is not None and _continues(last, kind, level, line, step, right_edge):
            last.lines.append(line)
        else:
            blocks.append(_Block(kind, [line], level))
    return [_bold_heading(b, levels) for b in blocks] if bold_headings else blocks


def _continues(block: _Block, kind: str, level: int, line: Line, step: float,
               right_edge: Callable[[Line], float]) -> bool:
    """Whether `line` goes on with `block` (else it starts a new block)."""
    prev = block.lines[-1]
    gap = prev.bottom - line.bottom
    usual = max(step, 1.25 * max(prev.size, line.size))  # big headings are spaced wider
    if gap < 0 or gap > usual + 0.4 * line.size:  # a column jump, or a blank line
        return False
    if block.kind == "heading":
        return kind == "heading" and level == block.level
    if block.kind == "code":
        return kind == "code"
    if kind != "paragraph":
        return False
    if block.kind == "item":  # a hanging continuation line is indented past the bullet
        return line.x0 > block.lines[0].x0 + 0.3 * line.size
    if line.x0 > prev.x0 + 0.6 * line.size:  # a first-line indent
        return False
    short = prev.x1 < right_edge(prev) - 4 * prev.size
    return not (short and prev.text.endswith(_SENTENCE_END))


def _bold_heading(block: _Block, levels: dict[float, int]) -> _Block:
    """A short paragraph of a single bold line standing alone is a heading too."""
    line = block.lines[0]
    if block.kind == "paragraph" and len(block.lines) == 1 and line.bold \
            and len(line.text) <= 100 and not line.text.endswith((".", ",", ";")):
        return _Block("heading", block.lines, min(len(levels) + 1, 6))
    return block


def _runs_on(block: _Block, first: _Block) -> bool:
    """Whether a paragraph goes on over a page break (mid-sentence, lower case next)."""
    return block.kind == first.kind == "paragraph" \
        and not block.lines[-1].text.endswith(_SENTENCE_END) and first.lines[0].text[:1].islower()


def _format(block: _Block) -> str:
    if block.kind == "code":
        left = min(x.x0 for x in block.lines)
        return "\n".join(" " * round((x.x0 - left) / (0.6 * x.size)) + x.text
                         for x in block.lines)
    text = _join(block.lines)
    if block.kind == "heading":
        return "#" * block.level + " " + text
    if block.kind == "item":
        bullet = _bullet(text)
        return f"- {bullet}" if bullet is not None else text
    return text


def _join(lines: list[Line]) -> str:
    """Lines of one paragraph as one line, words split at line ends made whole again."""
    text = ""
    for line in lines:
        piece = _DOT_LEADER.sub(" … ", " ".join(line.text.split())).strip()
        if text.endswith((SOFT_HYPHEN, *_HYPHENS)) and len(text) > 1 and text[-2].isalnum():
            # `tempé-` + `rature` is one word; `Saint-` + `Denis` keeps its hyphen
            hyphen = text[-1] if text[-1] in "-\u2010" else "-"
            text = text[:-1] + ("" if piece[:1].islower() else hyphen) + piece
        else:
            text = f"{text} {piece}" if text else piece
        if line.hyphenated:
            text += SOFT_HYPHEN
    return text.replace(SOFT_HYPHEN, "-")  # a mark left at the very end: a real hyphen


def _merge_items(texts: list[str], blocks: list[_Block]) -> list[str]:
    """List items one per line, with no blank line between the items of one list."""
    merged: list[str] = []
    for i, (text, block) in enumerate(zip(texts, blocks, strict=True)):
        if i > 0 and block.kind == blocks[i - 1].kind == "item":
            merged[-1] += "\n" + text
        else:
            merged.append(text)
    return merged
