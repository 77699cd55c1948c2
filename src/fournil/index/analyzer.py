"""The French analyzer both the index and the queries go through: text to search terms.

lowercase -> elision off (l', d', qu', jusqu'...) -> words -> stop words out -> Snowball
French stem of the accented word (the stemmer knows French endings: `inventèrent` ->
`invent`) -> accents folded after stemming, ligatures spelled out (`Machærous` and
`Machaerous` meet: NFKD alone keeps æ and œ).

Measured on the hand-written questions (bench/index_bench.py, 7,469 passages): recall@5 goes
from 0.81 with a plain lowercase tokenizer to 0.88 with stemming and to 0.97 with stemming
plus folding; questions typed without accents are the ones folding saves.

An index is only valid with the analyzer that built it, so `ANALYZER_ID` names it with a
fingerprint of its stop list and of its output on a probe sentence: a new stemmer version or
stop list changes it, and an index built with another analyzer is refused on load.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

import Stemmer

from fournil.text.stopwords import STOP_WORDS

VERSION = 1
_WORD = re.compile(r"\w+")
_ELISION = re.compile(r"\b(?:[cdjlmnst]|qu|jusqu|lorsqu|puisqu|quoiqu|presqu|quelqu)['’]")
_LIGATURES = str.maketrans({"æ": "ae", "œ": "oe", "ß": "ss"})
# question words carry no topic; the shared list (fournil.text.stopwords) is for prose
_QUESTION_WORDS = "combien pourquoi quoi comment quand où quel quelle quels quelles lequel"


def fold(word: str) -> str:
    """Accents off (é -> e, ç -> c), ligatures spelled out (æ -> ae, œ -> oe)."""
    decomposed = unicodedata.normalize("NFKD", word.translate(_LIGATURES))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# compared on the folded form, so `a`/`à` and `ou`/`où` both go; elided forms (`l'`) are
# taken off before words are split, so the list keeps only whole words
STOP = frozenset(fold(w) for w in (*STOP_WORDS["fr"], *_QUESTION_WORDS.split()) if "'" not in w)
_stemmer = Stemmer.Stemmer("french")


@functools.lru_cache(maxsize=1 << 20)
def term(word: str) -> str | None:
    """The search term of one lowercased word, None for a stop word. Cached: a corpus has
    far fewer distinct words than words, and stemming is most of the analyzer's time."""
    if fold(word) in STOP:
        return None
    return fold(_stemmer.stemWord(word))


def analyze(text: str) -> list[str]:
    """The search terms of `text`, in order."""
    text = _ELISION.sub(" ", text.lower())
    return [t for word in _WORD.findall(text) if (t := term(word)) is not None]


PROBE = ("Qu'est-ce que l'échappement ? Jusqu'à Machærous, les horlogers inventèrent "
         "d’heureuses œuvres ; CONTRÔLER l'accessibilité des fichiers PDF.")


def _fingerprint() -> str:
    h = hashlib.sha256()
    h.update("\n".join(sorted(STOP)).encode())
    h.update(b"\0" + " ".join(analyze(PROBE)).encode())
    return h.hexdigest()[:12]


ANALYZER_ID = f"fr-snowball-fold/{VERSION}/{_fingerprint()}"
