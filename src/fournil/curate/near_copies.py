"""Planted near-duplicates: the edits by which real corpora repeat a document.

A reposted text comes back with a typo fixed, a paragraph moved, a site's header and footer
around it, or re-wrapped and partly upper-cased. These functions make such copies of real
documents, so that near-dedup recall and precision can be measured (bench/curate_bench.py,
tests/test_minhash.py) on text whose duplicates are known.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

_SENTENCE_END = re.compile(r"(?<=[.!?…»])\s+")

HEADERS = ["Bibliothèque numérique romande — fichier {n}", "Chapitre {n}",
           "Édition électronique, page {n}", "Extrait n° {n} de la collection"]
FOOTERS = ["Page {n} / 312", "Numérisé en 2011. Tous les textes sont libres de droits.",
           "Retour au sommaire", "Fin de l'extrait {n}"]


def lines_of(text: str, max_line_chars: int = 1000) -> list[str]:
    """Non-empty paragraphs as lines; one over `max_line_chars` is cut at sentence ends."""
    lines = []
    for paragraph in text.split("\n"):
        piece = ""
        for sentence in _SENTENCE_END.split(paragraph.strip()) if paragraph.strip() else []:
            piece = f"{piece} {sentence}".strip()
            if len(piece) >= max_line_chars:
                lines.append(piece)
                piece = ""
        if piece:
            lines.append(piece)
    return lines


def chunk(text: str, min_chars: int = 2000) -> list[str]:
    """`text` cut into documents of whole lines, each at least `min_chars` long but the last."""
    chunks: list[str] = []
    doc: list[str] = []
    for line in lines_of(text):
        doc.append(line)
        if sum(map(len, doc)) >= min_chars:
            chunks.append("\n".join(doc))
            doc = []
    if doc:
        chunks.append("\n".join(doc))
    return chunks


def edit_words(text: str, rng: random.Random, n_edits: int) -> str:
    """Substitute, delete or insert `n_edits` words (a copy edit, a typo fixed)."""
    tokens = text.split(" ")
    for _ in range(n_edits):
        k = rng.randrange(len(tokens))
        op = rng.choice(("sub", "del", "ins"))
        if op == "sub":
            tokens[k] = rng.choice(tokens)
        elif op == "del" and len(tokens) > 1:
            del tokens[k]
        else:
            tokens.insert(k, rng.choice(tokens))
    return " ".join(tokens)


def move_paragraph(text: str, rng: random.Random) -> str:
    """One line moved elsewhere."""
    lines = text.split("\n")
    moved = lines.pop(rng.randrange(len(lines)))
    lines.insert(rng.randrange(len(lines) + 1), moved)
    return "\n".join(lines)


def reframe(text: str, rng: random.Random) -> str:
    """A different header and footer around the same body."""
    n = rng.randrange(1, 400)
    return f"{rng.choice(HEADERS).format(n=n)}\n{text}\n{rng.choice(FOOTERS).format(n=n)}"


def reflow(text: str, rng: random.Random) -> str:
    """The same words, re-wrapped at ~70 columns, doubled spaces, one paragraph upper-cased."""
    lines = text.split("\n")
    k = rng.randrange(len(lines))
    lines[k] = lines[k].upper()
    out, width = [], 0
    for word in " ".join(lines).split(" "):
        out.append(word)
        width += len(word) + 1
        if width > 70:
            out.append("\n")
            width = 0
    return "  ".join(out).replace("  \n  ", "\n")


NEAR_COPY_KINDS: dict[str, Callable[[str, random.Random], str]] = {
    "edits-4": lambda t, rng: edit_words(t, rng, 4),  # ~1% of a 2 KB document's words
    "edits-8": lambda t, rng: edit_words(t, rng, 8),  # ~2%: Jaccard ~0.8, near the LSH knee
    "moved-paragraph": move_paragraph,
    "new-header-footer": reframe,
    "case+wrap": reflow,
    "edits-2+header": lambda t, rng: reframe(edit_words(t, rng, 2), rng),
}
