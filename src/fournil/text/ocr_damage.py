"""A model of OCR damage, applied to clean text to make (noisy, clean) correction pairs.

What old prints and poor scans do to text, each kind a small seeded transformation:
- `confusion`: glyphs misread for similar ones (rn<->m, cl<->d, vv<->w, e<->c, l<->1<->I,
  u<->n, h<->b);
- `long_s`: the page is set with the long s (ſ in non-final position), which OCR then
  partly misreads as f;
- `ligature`: fi, fl, ae, oe kept as the ligature code points ﬁ ﬂ æ œ;
- `diacritics`: accents dropped (é->e, ç->c) or swapped (è->é, â->à);
- `split` / `merge`: a space inserted inside a word, or lost between two words;
- `garbage`: specks read as stray characters;
- `wrap`: the page's line breaks kept (lines cut at a column width), some words hyphenated
  across them (`word-\\nword`);
- `line_break`: stray line breaks in the middle of a line.

`severity` scales every rate (a float; the recipe's axis names `none`, `light`, `medium`,
`heavy`). The same (text, severity, layout, seed) always gives the same noise.

`print_page` is the page before any damage: the text set in lines at a column width, some
words hyphenated across the line end, the lines kept or joined by spaces (a plain-text
export). A corrector that keeps that layout (a diplomatic transcription, as digitisation
libraries publish OCR and post-OCR benchmarks score it) is trained on (damaged page, page)
pairs: `fournil.synth.tasks.ocr`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

SEVERITY = {"none": 0.0, "light": 0.4, "medium": 1.0, "heavy": 2.2}
# column widths a page's lines are cut at; "flowing" keeps the text's own lines
LAYOUT_WIDTHS = {"columns": (28, 42), "lines": (55, 80), "flowing": None}

# rates at severity 1.0 (per opportunity: a matching glyph, a space, a word, a character)
CONFUSION_RATE = 0.035
LONG_S_PAGE = 0.25  # chance that the page is set with long s
LONG_S_MISREAD = 0.35  # ſ then read as f
LIGATURE_RATE = 0.25
DIACRITIC_RATE = 0.08
SPLIT_RATE = 0.012  # per word of 5+ letters
MERGE_RATE = 0.015  # per space
GARBAGE_RATE = 0.003  # per character
HYPHENATE_RATE = 0.5  # a word that crosses the line end is cut with a hyphen
STRAY_BREAK_RATE = 0.008  # per space

CONFUSIONS = {
    "rn": ["m"], "m": ["rn"], "cl": ["d"], "d": ["cl"], "vv": ["w"], "w": ["vv"],
    "e": ["c"], "c": ["e"], "l": ["1", "I"], "1": ["l", "I"], "I": ["l", "1"],
    "u": ["n"], "n": ["u"], "h": ["b"], "b": ["h"],
}
_CONFUSION = re.compile("rn|cl|vv|[mdwecl1Iunhb]")
LIGATURES = {"fi": "ﬁ", "fl": "ﬂ", "ae": "æ", "oe": "œ"}
_LIGATURE = re.compile("fi|fl|ae|oe")
DIACRITICS = {
    "é": ["e", "è"], "è": ["e", "é"], "ê": ["e", "è"], "ë": ["e"], "à": ["a"], "â": ["a", "à"],
    "ç": ["c"], "î": ["i"], "ï": ["i"], "ô": ["o"], "ù": ["u"], "û": ["u", "ù"],
    "É": ["E"], "À": ["A"], "Ç": ["C"],
}
_DIACRITIC = re.compile(f"[{''.join(DIACRITICS)}]")
_LONG_S = re.compile(r"s(?=[^\W\d_])")  # an s followed by a letter: not word-final
GARBAGE = "~^|¦•■°*;:,.'`´¨"
_WORD = re.compile(r"[^\W\d_]{5,}")


def severity_value(severity: float | str) -> float:
    if isinstance(severity, str):
        if severity not in SEVERITY:
            raise ValueError(f"unknown OCR severity {severity!r} ({', '.join(SEVERITY)}, "
                             "or a number)")
        return SEVERITY[severity]
    if severity < 0:
        raise ValueError(f"OCR severity must be >= 0, got {severity}")
    return float(severity)


@dataclass
class Noisy:
    text: str
    kinds: Counter = field(default_factory=Counter)  # damage kind -> events


def _sub(pattern: re.Pattern, text: str, rate: float, rng: random.Random, kind: str,
         kinds: Counter, replace) -> str:
    """Replace each match with probability `rate` by `replace(match_text)`."""
    def one(m: re.Match) -> str:
        if rng.random() >= rate:
            return m.group(0)
        kinds[kind] += 1
        return replace(m.group(0))
    return pattern.sub(one, text)


def _wrap(text: str, width: int, hyphenate: float, rng: random.Random, kinds: Counter,
          line_end: str = "\n") -> str:
    """Cut each line of `text` at `width` columns, hyphenating some words across the cut;
    the cuts are `line_end`."""
    out: list[str] = []
    for line in text.split("\n"):
        out_lines: list[str] = []
        current = ""
        for word in line.split(" "):
            if not current:
                current = word
            elif len(current) + 1 + len(word) <= width:
                current += " " + word
            else:
                room = width - len(current) - 2  # the space and the hyphen
                if len(word) >= 6 and room >= 2 and rng.random() < hyphenate:
                    cut = min(room, len(word) - 3)
                    out_lines.append(f"{current} {word[:cut]}-")
                    current = word[cut:]
                    kinds["hyphenation"] += 1
                else:
                    out_lines.append(current)
                    current = word
                kinds["wrap"] += 1
        out_lines.append(current)
        out.append(line_end.join(out_lines))
    return "\n".join(out)


def print_page(text: str, layout: str = "lines", seed: int = 0, join_lines: bool = False
               ) -> str:
    """`text` as printed: cut in lines at one of `layout`'s column widths, half the words
    that cross a line end hyphenated; with `join_lines`, the lines a text line was cut into
    are joined by a space (a word cut at a line end then reads `exem- ple`)."""
    if layout not in LAYOUT_WIDTHS:
        raise ValueError(f"unknown OCR layout {layout!r} ({', '.join(LAYOUT_WIDTHS)})")
    width = LAYOUT_WIDTHS[layout]
    if width is None:
        return text
    rng = random.Random(seed)
    return _wrap(text, rng.randint(*width), HYPHENATE_RATE, rng, Counter(),
                 line_end=" " if join_lines else "\n")


def add_ocr_noise(text: str, severity: float | str = "medium", seed: int = 0,
                  layout: str = "lines") -> Noisy:
    """`text` as a mediocre OCR engine might have read it from a printed page."""
    s = severity_value(severity)
    if layout not in LAYOUT_WIDTHS:
        raise ValueError(f"unknown OCR layout {layout!r} ({', '.join(LAYOUT_WIDTHS)})")
    rng = random.Random(seed)
    kinds: Counter = Counter()
    if rng.random() < min(1.0, LONG_S_PAGE * s):
        text = _sub(_LONG_S, text, 1.0, rng, "long_s", kinds, lambda _: "ſ")
        text = _sub(re.compile("ſ"), text, LONG_S_MISREAD, rng, "long_s_as_f", kinds,
                    lambda _: "f")
    text = _sub(_CONFUSION, text, min(1.0, CONFUSION_RATE * s), rng, "confusion", kinds,
                lambda g: rng.choice(CONFUSIONS[g]))
    text = _sub(_LIGATURE, text, min(1.0, LIGATURE_RATE * s), rng, "ligature", kinds,
                LIGATURES.__getitem__)
    text = _sub(_DIACRITIC, text, min(1.0, DIACRITIC_RATE * s), rng, "diacritics", kinds,
                lambda g: rng.choice(DIACRITICS[g]))
    text = _sub(_WORD, text, min(1.0, SPLIT_RATE * s), rng, "split", kinds,
                lambda w: (lambda k: w[:k] + " " + w[k:])(rng.randint(2, len(w) - 2)))
    text = _sub(re.compile(r"(?<=\w) (?=\w)"), text, min(1.0, MERGE_RATE * s), rng, "merge",
                kinds, lambda _: "")
    text = _sub(re.compile(r"\S"), text, min(1.0, GARBAGE_RATE * s), rng, "garbage", kinds,
                lambda g: rng.choice([g + rng.choice(GARBAGE), rng.choice(GARBAGE)]))
    width = LAYOUT_WIDTHS[layout]
    if width is not None:
        text = _wrap(text, rng.randint(*width), min(1.0, HYPHENATE_RATE * s), rng, kinds)
    text = _sub(re.compile(r" (?=\S)"), text, min(1.0, STRAY_BREAK_RATE * s), rng,
                "line_break", kinds, lambda _: "\n")
    return Noisy(text, kinds)
