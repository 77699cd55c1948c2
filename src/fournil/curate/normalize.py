"""Unicode and whitespace normalisation of document text.

Heritage texts come with NEL (U+0085), Windows line ends, form feeds and stray control
characters; the tokenizer and the dedup key should see one canonical form.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np

_LINE_BREAKS = re.compile(r"\r\n|\r|\u0085|\u2028|\u2029")
# control characters other than tab and newline
_CONTROLS = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str, form: str = "NFC") -> str:
    """Canonical Unicode form, `\\n` line ends, no control characters, trimmed blank runs."""
    text = unicodedata.normalize(form, text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROLS.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip()


def dedup_key(text: str) -> str:
    """Text as exact dedup sees it: case and whitespace differences do not count."""
    return " ".join(text.casefold().split())


# ------------------------------------------------------------- the OCR skeleton (near-dedup)

# letter sequences an OCR engine reads for one another, folded to one before comparing: the
# two prints of a book then give the same skeleton where the scans disagree on these
_OCR_DIGRAPHS = (("rn", "m"), ("cl", "d"), ("vv", "w"))
# then single letters that OCR confuses, each folded into the first of its group (after
# casefolding, so I is i; after the digits 1 and 0, read as l and o)
_OCR_CLASSES = ("ec", "nu", "hb", "fs", "il")
# letters NFKD leaves whole that print as two
_EXPANSIONS = (("œ", "oe"), ("Œ", "oe"), ("æ", "ae"), ("Æ", "ae"))
_LOOKALIKE_DIGITS = {"1": "l", "0": "o"}
# a digraph's first letter -> the letter it is read as (the three digraphs start differently)
_DIGRAPH_AS = np.zeros(128, np.uint32)
for _pair, _single in _OCR_DIGRAPHS:
    _DIGRAPH_AS[ord(_pair[0])] = ord(_single)


@lru_cache(maxsize=1)
def _letter_table() -> tuple[np.ndarray, np.ndarray]:
    """Two lookup tables over the Basic Multilingual Plane, built once per process (~25 ms).

    `fold[c]`: the casefolded letter for a letter (any script), `l`/`o` for the digits 1/0,
    the digit itself for other digits, 0 (dropped) for everything else: marks, punctuation,
    spaces, symbols.
    `ocr_class[c]`: the letter that stands for `c`'s OCR confusion class (`c` otherwise).
    """
    fold = np.zeros(0x10000, np.uint32)
    for c in range(0x10000):
        ch = chr(c)
        category = unicodedata.category(ch)
        if ch in _LOOKALIKE_DIGITS:
            fold[c] = ord(_LOOKALIKE_DIGITS[ch])
        elif category.startswith("L"):
            fold[c] = ord(ch.casefold()[0])
        elif category == "Nd":
            fold[c] = c
    ocr_class = np.arange(0x10000, dtype=np.uint32)
    for group in _OCR_CLASSES:
        for letter in group[1:]:
            ocr_class[ord(letter)] = ord(group[0])
    return fold, ocr_class


def ocr_letters(text: str) -> np.ndarray:
    """The OCR skeleton of `text` as code points (uint32): what near-dedup compares.

    Two scans of one page differ in what OCR gets wrong, and what OCR gets wrong is mostly
    spacing, punctuation, accents, case, ligatures, line-end hyphens and a few look-alike
    glyphs. The skeleton keeps only what survives all of those: NFKD (ligatures and long s
    to their letters, accents split off), then letters and digits only, casefolded (marks,
    punctuation and spaces dropped, so merged, split and hyphenated words line up), then
    rn/cl/vv read as m/d/w and the confusable letters (e/c, n/u, h/b, f/s, i/l/I/1, o/0)
    folded into one each. Letters and digits of any script are kept: digits so that two
    tables or lists that differ only in their figures stay apart.
    """
    text = unicodedata.normalize("NFKD", text)
    for ligature, letters in _EXPANSIONS:
        if ligature in text:
            text = text.replace(ligature, letters)
    # surrogatepass: a lone surrogate (not a letter) is dropped below instead of raising
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    fold, ocr_class = _letter_table()
    bmp_only = points.size == 0 or points.max() < 0x10000
    if bmp_only:
        letters = fold[points]
    else:  # rare: beyond the BMP, keep letters (CJK extensions), not emoji
        bmp = points < 0x10000
        letters = np.where(bmp, fold[np.where(bmp, points, 0)], points)
        astral = np.flatnonzero(~bmp)
        letters[astral] = [ord(chr(c).casefold()[0])
                           if unicodedata.category(chr(c)).startswith("L") else 0
                           for c in points[astral]]
    letters = letters[letters != 0]
    first, second = letters[:-1], letters[1:]
    digraph = np.zeros(first.size, bool)
    for pair, _ in _OCR_DIGRAPHS:
        digraph |= (first == ord(pair[0])) & (second == ord(pair[1]))
    if digraph.any():
        at = np.flatnonzero(digraph)
        letters = letters.copy()
        letters[at] = _DIGRAPH_AS[letters[at]]  # the pair's first letter says which
        letters = np.delete(letters, at + 1)
    if bmp_only:
        return ocr_class[letters]
    return np.where(letters < 0x10000, ocr_class[np.minimum(letters, 0xFFFF)], letters)


def ocr_skeleton(text: str) -> str:
    """`ocr_letters` as a string, to read: `ocr_skeleton("Clé, 1'été 1830") == "deietei83o"`."""
    return ocr_letters(text).astype("<u4").tobytes().decode("utf-32-le")
