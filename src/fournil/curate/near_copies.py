"""Planted near-duplicates: the edits by which real corpora repeat a document.

A reposted text comes back with a typo fixed, a paragraph moved, a site's header and footer
around it, or re-wrapped and partly upper-cased. A book in an OCR'd collection comes back
scanned by another library: 2-5% of its characters read differently, the library's running
heads, page numbers and stamps around every page, a paragraph out of order at a page break,
and cut at another place. These functions make such copies of real documents, and the hard
negatives that must never be merged (chapters of one book, texts quoting the same
paragraph, short notices with the same boilerplate), so that near-dedup recall and
precision can be measured (bench/near_dup_bench.py, bench/curate_bench.py,
tests/curate/test_minhash.py) on text whose duplicates are known.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fournil.text.ocr_damage import add_ocr_noise

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


def chunk_spans(lines: Sequence[str], min_chars: int = 2000) -> list[tuple[int, int]]:
    """[start, end) line spans cutting `lines` into documents of at least `min_chars` (but
    the last): the spans let a copy be cut elsewhere in the same text (`recut`)."""
    spans: list[tuple[int, int]] = []
    start, size = 0, 0
    for k, line in enumerate(lines):
        size += len(line)
        if size >= min_chars:
            spans.append((start, k + 1))
            start, size = k + 1, 0
    if start < len(lines):
        spans.append((start, len(lines)))
    return spans


def chunk(text: str, min_chars: int = 2000) -> list[str]:
    """`text` cut into documents of whole lines, each at least `min_chars` long but the last."""
    lines = lines_of(text)
    return ["\n".join(lines[a:b]) for a, b in chunk_spans(lines, min_chars)]


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


# ------------------------------------------------------- OCR'd collections: the same book twice

# add_ocr_noise's character error rate per unit of severity (layout "lines", whitespace runs
# collapsed before comparing), measured on the bundled corpus: 0.0075, 0.016, 0.033, 0.048 at
# severities 0.25, 0.5, 1, 1.5, close to linear
MODEL_CER_PER_SEVERITY = 0.033
# share of a rescan's errors that the noise model does not know: any letter read as any
# other, lost or doubled. Without them, a normaliser built from the model's own confusion
# table would undo nearly all the damage and the benchmark would only test the table.
UNMODELLED_SHARE = 1 / 3
_LETTER = re.compile(r"[^\W\d_]")
_ANY_LETTER = "abcdefghijklmnopqrstuvwxyzéèàêç"


def ocr_rescan(text: str, rng: random.Random, cer: float) -> str:
    """`text` as another library's OCR read it: about `cer` of its characters in error.

    Two thirds of the errors come from `fournil.text.ocr_damage` (rn/m, cl/d, e/c, l/1/I,
    u/n, h/b, long s read as f, ligatures, lost or swapped accents, split and merged words,
    lines cut at a column with hyphenated words); one third are letters replaced, dropped or
    doubled at random.
    """
    severity = (1 - UNMODELLED_SHARE) * cer / MODEL_CER_PER_SEVERITY
    noisy = add_ocr_noise(text, severity, seed=rng.randrange(2**32), layout="lines").text
    n_letters = max(1, len(_LETTER.findall(noisy)))
    rate = min(1.0, UNMODELLED_SHARE * cer * len(noisy) / n_letters)

    def misread(m: re.Match) -> str:
        if rng.random() >= rate:
            return m.group(0)
        other = rng.choice(_ANY_LETTER)
        other = other.upper() if m.group(0).isupper() else other
        return rng.choice((other, "", m.group(0) + other))

    return _LETTER.sub(misread, noisy)


@dataclass(frozen=True)
class Library:
    """How one digitising library frames every page: running heads, page number, stamp."""

    verso: str  # running head of even pages; {n} the page number, {title} the work's
    recto: str  # of odd pages
    stamp: str  # at the foot of every page

    def head(self, n: int, title: str) -> str:
        return (self.verso if n % 2 == 0 else self.recto).format(n=n, title=title,
                                                                 TITLE=title.upper())


LIBRARIES = (
    Library("{n} {TITLE}.", "{TITLE}. {n}",
            "Source gallica.bnf.fr / Bibliothèque nationale de France"),
    Library("— {n} —", "— {n} —", "Digitized by Google"),
    Library("{n}  {title}", "{title}  {n}",
            "Numérisé par la Bibliothèque municipale de Lyon — Fonds ancien"),
    Library("{n}", "{n}", "This book was digitized by the Internet Archive, University of "
            "Toronto Libraries"),
)


def add_furniture(text: str, rng: random.Random, title: str, library: Library,
                  page_chars: tuple[int, int] = (1300, 1900)) -> str:
    """`text` laid out in pages cut between words, each page framed by `library`'s running
    head (with its page number) above and stamp below, as a scan's OCR text has them."""
    pages, pos = [], 0
    while pos < len(text):
        end = pos + rng.randint(*page_chars)
        cut = len(text) if end >= len(text) else max(text.rfind(" ", pos, end),
                                                     text.rfind("\n", pos, end))
        cut = len(text) if cut <= pos else cut
        pages.append(text[pos:cut].strip())
        pos = cut + 1
    first = rng.randrange(5, 400)
    return "\n".join(f"{library.head(first + k, title)}\n{page}\n{library.stamp}"
                     for k, page in enumerate(pages))


def reorder_at_page_breaks(text: str, rng: random.Random,
                           page_chars: tuple[int, int] = (1000, 1600)) -> str:
    """The two paragraphs around each page break in the other order: how OCR zoning reads a
    page whose last block (a note, a verse, a short paragraph) it placed after the next."""
    lines = text.split("\n")
    k, size, page = 0, 0, rng.randint(*page_chars)
    while k < len(lines) - 1:
        size += len(lines[k])
        if size >= page:
            lines[k], lines[k + 1] = lines[k + 1], lines[k]
            k, size, page = k + 2, len(lines[k]), rng.randint(*page_chars)
        else:
            k += 1
    return "\n".join(lines)


def recut(lines: Sequence[str], span: tuple[int, int], rng: random.Random,
          overlap: tuple[float, float] = (0.7, 0.9), reach: int = 12) -> tuple[int, int]:
    """Another [start, end) span of `lines` sharing `overlap` of the longer of the two texts
    with `span`: the same chapter cut a few paragraphs earlier or later by another library.

    Spans that start and end within `reach` lines of the original's are tried; one with
    shared characters / longer length in `overlap` is drawn, else the closest to its middle.
    """
    start, end = span
    prefix = [0]
    for line in lines:
        prefix.append(prefix[-1] + len(line))
    length = prefix[end] - prefix[start]
    fits, others = [], []
    for s in range(max(0, start - reach), min(end - 1, start + reach) + 1):
        for e in range(max(s + 1, end - reach), min(len(lines), end + reach) + 1):
            if (s, e) == span:
                continue
            shared = max(0, prefix[min(e, end)] - prefix[max(s, start)])
            ratio = shared / max(length, prefix[e] - prefix[s], 1)
            (fits if overlap[0] <= ratio <= overlap[1] else others).append(
                ((s, e), abs(ratio - sum(overlap) / 2)))
    if fits:
        return rng.choice(fits)[0]
    if not others:
        raise ValueError(f"no other span of lines near {span}: a text of {len(lines)} lines")
    return min(others, key=lambda c: c[1])[0]


# ------------------------------------------------------------------- hard negatives

BOILERPLATES = (
    "Ce texte est offert par la Bibliothèque électronique du Québec. Il est du domaine public "
    "au Canada et peut être reproduit, diffusé ou modifié librement, à condition d'en citer "
    "la source et de ne pas en faire un usage commercial.",
    "Cet article est une ébauche concernant la littérature française. Vous pouvez partager vos "
    "connaissances en l'améliorant selon les recommandations des projets correspondants. "
    "Portail de la littérature française — Portail du XIXe siècle.",
    "Texte établi d'après l'édition originale. L'orthographe et la ponctuation ont été "
    "modernisées ; les notes de l'éditeur ont été supprimées. Fichier produit par l'équipe des "
    "bénévoles de la bibliothèque numérique, relu et corrigé.",
    "Extrait de la collection « Classiques du théâtre ». Numérisation et mise en ligne par la "
    "médiathèque municipale. Pour signaler une erreur, écrivez au service des collections "
    "patrimoniales ; merci de citer la source de ce document.",
    "Ce document fait partie des collections numérisées de la bibliothèque patrimoniale. Sa "
    "reproduction est libre pour un usage non commercial, sous réserve de la mention de la "
    "source. Les demandes de reproduction sont à adresser au service des archives.",
)


def insert_quotation(text: str, quotation: str, rng: random.Random) -> str:
    """`quotation` as a paragraph of its own between two of `text`'s lines."""
    lines = text.split("\n")
    k = rng.randrange(1, len(lines)) if len(lines) > 1 else 1
    return "\n".join([*lines[:k], f"« {quotation} »", *lines[k:]])


def opening(text: str, chars: int) -> str:
    """The start of `text` up to the first sentence or line end at or after `chars`
    characters (a short notice, a stub, a poem's first lines)."""
    end = _SENTENCE_END.search(text, chars)
    line_end = text.find("\n", chars)
    cuts = [c for c in (end.start() if end else -1, line_end) if c >= 0]
    return text[:min(cuts)] if cuts else text
