"""A document cut into pieces a correction model reads one at a time, and put back together.

Pieces are at most `max_chars` characters (the size corrections are evaluated at: ICDAR
pieces are <= 400), cut at whitespace: a line break in the second half of the window if
there is one (a line of OCR is a unit of the page), else the last space. The whitespace
between pieces is kept as it was, so a document whose pieces come back unchanged is the
same text, character for character. A run of more than `max_chars` characters without
whitespace is cut where it must be.
"""

from __future__ import annotations


def split(text: str, max_chars: int) -> list[tuple[int, int]]:
    """(start, end) of each piece: none holds whitespace at its ends, and what lies between
    two pieces is whitespace only."""
    spans, start, n = [], 0, len(text)
    while start < n:
        while start < n and text[start].isspace():
            start += 1
        if start == n:
            break
        end = min(n, start + max_chars)
        if end < n and not text[end].isspace():  # would cut a word: back up to whitespace
            window = text[start:end]
            newline = window.rfind("\n")
            space = max(window.rfind(" "), window.rfind("\t"), newline)
            cut = newline if newline > max_chars // 2 else space
            if cut > 0:
                end = start + cut
        piece_end = end
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        spans.append((start, piece_end))
        start = end
    return spans


def join(text: str, spans: list[tuple[int, int]], pieces: list[str]) -> str:
    """`text` with each span replaced by its piece, the whitespace around them kept."""
    out, last = [], 0
    for (start, end), piece in zip(spans, pieces, strict=True):
        out += [text[last:start], piece]
        last = end
    out.append(text[last:])
    return "".join(out)
