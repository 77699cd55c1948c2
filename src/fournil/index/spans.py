"""Where a quote is in its passage, in the passage's own characters.

A quote is verbatim when its whitespace-squashed text is in the squashed passage
(`fournil.formats.citations.is_verbatim`): line breaks and double spaces are layout. So the
search runs on the squashed passage, and a map from each squashed character to the original
one turns the match back into offsets of the passage, then of its document.
"""

from __future__ import annotations

from fournil.formats.citations import squash


def squashed_with_offsets(text: str) -> tuple[str, list[int]]:
    """`squash(text)` and, for each of its characters, its index in `text`."""
    chars: list[str] = []
    where: list[int] = []
    pending_space = False
    for i, c in enumerate(text):
        if c.isspace():
            pending_space = bool(chars)  # no leading space: squash strips the ends
            continue
        if pending_space:
            chars.append(" ")
            where.append(i - 1)
            pending_space = False
        chars.append(c)
        where.append(i)
    return "".join(chars), where


def locate(quote: str, text: str) -> tuple[int, int] | None:
    """(start, end) of the first occurrence of `quote` in `text`, whitespace aside: `text`
    [start:end] squashes to `squash(quote)`. None when the quote is not verbatim."""
    needle = squash(quote)
    if not needle:
        return None
    haystack, where = squashed_with_offsets(text)
    at = haystack.find(needle)
    if at < 0:
        return None
    return where[at], where[at + len(needle) - 1] + 1
