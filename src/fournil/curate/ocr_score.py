"""OCR-noise score: how garbled a document looks, from cheap surface features.

Heritage text that went through OCR carries typical damage: letters misread (rn/m, e/c,
l/1, long s ſ), ligature code points (ﬁ ﬂ), dropped diacritics, words split,
stray punctuation inside words and end-of-line hyphenation left in. Such a document is
flagged for correction, never rejected for it. Each feature counts "bad events"; their sum
per word is mapped to [0, 1]. No lexicon: the short-word feature uses the fact that
two-letter tokens of French or English form a small closed set (le, de, et, un, of, to, ...)
which misreadings leave (lc, dc, ct, nn, ia).

Calibrated in tests/curate/test_curate_filters.py on the bundled corpus against the same text with
synthetic OCR damage: clean prose and verse score < 0.1, damaged text far above.
"""

from __future__ import annotations

import math
import re

from fournil.curate.quality import words_of
from fournil.text.stopwords import STOP_WORDS

# Each pattern starts with a character class, so the regex engine skips ahead quickly.
# Characters of Latin-script French/English text (markup's | { } included); anything else is
# "rare" there (ſ, ﬁ, ¬, ¦)
_RARE = re.compile(r"[^a-zA-Z0-9\sàâäáãåçéèêëíìîïñóòôöõúùûüýÿœæÀÂÄÁÃÅÇÉÈÊËÍÌÎÏÑÓÒÔÖÕÚÙÛÜÝŸŒÆ"
                   r".,;:!?'\"«»“”‘’()\[\]{}|\-–—…/%&*°§€$£+=@#<>_]")
LATIN_LANGS = frozenset({"fr", "en"})
# a digit next to a letter (l1, 0n, tbe5), ordinals and units aside (1er, 2e, 4th, 10km, 5h)
_LETTER_DIGIT = re.compile(
    r"\d(?:(?<=[^\W\d_]\d)|(?!(?:er|re|e|es|ème|èmes|eme|nd|nde|o|st|rd|th|h|km|kg|cm|mm|m|g|l|s)\b)"
    r"(?=[^\W\d_]))")
# punctuation stuck between two letters (Sai^nt, Bras;sard); ".", "/" and ":" are left to
# URLs, code and wiki namespaces (Catégorie:Sport)
_INNER_PUNCT = re.compile(r"[\^~|;,!?*$%&+=<>\\](?<=[^\W\d_].)(?=[^\W\d_])")

_SHORT_WORDS = {
    "fr": frozenset("""a à y ô ai as au ce ci ça de du en es et eu il je la là le lu ma me mi ne
        ni nu on or os ou où pu sa se si ta te tu un va vu dû ah eh oh ha hé ho bu su fi mû né
        ré io ii iv vi ix xi xv xx mm mr st dr cf ex id ms pp vs""".split()),
    "en": frozenset("""a i am an as at be by do go he hi if in is it me my no of oh ok on or ox
        so to up us we ye ah eh ha ho lo mr ms dr st vs ex id ii iv vi ix xi xv xx""".split()),
}
# two-letter words (and frequent abbreviations, roman numerals) of each language
_KNOWN_SHORT = {lang: words | STOP_WORDS[lang] for lang, words in _SHORT_WORDS.items()}
# common French words whose unaccented spelling is not a word: a sign of dropped diacritics
_FR_DIACRITIC_LOSS = frozenset(
    "etait etaient ete etre etes apres tres deja meme memes premiere derniere pere mere frere "
    "tete fenetre francais francaise eglise interet eleve reponse repondit ecrit ecrire "
    "epoque etat etats ecole eveque evenement etrange etranger etude egalement".split())

NOISE_SCALE = 0.05  # bad events per word that give a score of 1 - 1/e ~ 0.63


def ocr_features(text: str, lang: str | None, words: list[str] | None = None) -> dict[str, float]:
    """Bad events per word, by kind. `words` may be passed if already computed."""
    words = words_of(text) if words is None else words
    n_words = max(1, len(words))
    feats = {
        "letter_digit": len(_LETTER_DIGIT.findall(text)) / n_words,
        "inner_punct": len(_INNER_PUNCT.findall(text)) / n_words,
        "hyphen_break": text.count("-\n") / n_words,
        "rare_char": len(_RARE.findall(text)) / n_words if lang in LATIN_LANGS else 0.0,
        "short_unknown": 0.0,
        "diacritic_loss": 0.0,
    }
    known = _KNOWN_SHORT.get(lang or "")
    if known is not None:
        short = [w for w in words if len(w) == 2 and w.isalpha()]
        feats["short_unknown"] = sum(w not in known for w in short) / n_words
    if lang == "fr":
        # a marker word stands for several unaccented words the list does not name; only
        # lowercase spellings count (capitals often drop accents by convention: Etat, Eglise)
        markers = set(filter(_FR_DIACRITIC_LOSS.__contains__, words))
        found = sum(len(re.findall(rf"(?<!\w){m}(?!\w)", text)) for m in markers)
        feats["diacritic_loss"] = 5 * found / n_words
    return feats


def ocr_noise_score(text: str, lang: str | None, words: list[str] | None = None) -> float:
    """Noise in [0, 1] (higher is noisier) from the summed per-word rate of OCR-like damage."""
    if not text.strip():
        return 0.0
    rate = sum(ocr_features(text, lang, words).values())
    return 1.0 - math.exp(-rate / NOISE_SCALE)
