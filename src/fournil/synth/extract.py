"""What the programmatic generators read off a French passage: sentences, noun phrases,
proper names, years, content words. Heuristics without a parser: good enough to build
a question whose answer is a given sentence, and cheap enough to run anywhere.
"""

from __future__ import annotations

import re

from fournil.text.stopwords import STOP_WORDS

_STOP = STOP_WORDS["fr"] | STOP_WORDS["en"]
# a sentence ends at . ! ? … (and a closing quote after them) before a capital or a quote
_SENTENCE_END = re.compile(r"(?<=[.!?…])[»”\"]?\s+(?=[«\"“—–-]?\s?[A-ZÀ-ÖØ-Þ])")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_DETERMINER = r"(?:l'|l’|(?:le|la|les|un|une|ce|cet|cette|ces)\s+)"
# adjectives French puts before the noun: "le petit village" is one phrase
_PRENOMINAL = frozenset("""petit petite petits petites grand grande grands grandes long longue
    vieux vieil vieille jeune jeunes bon bonne beau bel belle beaux belles nouveau nouvel
    nouvelle premier première dernier dernière seul seule moindre gros grosse haut haute
    mauvais mauvaise vrai vraie""".split())
# "le rempliriez", "la voyait": a pronoun before a verb, not a determiner before a noun
_VERB_ENDINGS = ("ez", "ait", "aient", "ais", "ions", "iez", "rai", "ras", "rons", "ront", "èrent")
# a determiner, a noun (or an adjective and a noun), optionally "de (la|l') noun"
_NOUN_PHRASE = re.compile(
    rf"\b({_DETERMINER})([^\W\d_][\w-]{{2,}})(\s+[^\W\d_][\w-]{{2,}})?"
    r"(?:\s+(de\s+|d'|d’|du\s+|des\s+)((?:la\s+|l'|l’)?[^\W\d_][\w-]{2,}))?", re.I)
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]{2,}"
                   r"(?:\s+(?:de\s+|d'|du\s+)?[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]{2,})*)")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")


def sentences(text: str) -> list[str]:
    """The passage cut into sentences, each stripped; lines are kept apart."""
    out: list[str] = []
    for line in text.split("\n"):
        out += [s.strip() for s in _SENTENCE_END.split(line) if s.strip()]
    return out


def words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """Lowercased words that carry meaning: no stop words, at least three letters."""
    return [w for w in words(text) if len(w) >= 3 and w not in _STOP]


def noun_phrases(sentence: str) -> list[str]:
    """'la diligence', 'le petit village', 'le vicomte de Brassard': a determiner and a
    content word, with an optional 'de' complement; in the order they appear."""
    out = []
    for m in _NOUN_PHRASE.finditer(sentence):
        det, noun, second, prep, comp = m.groups()
        if noun.lower() in _STOP or noun.lower().endswith(_VERB_ENDINGS):
            continue
        phrase = det.lower() + noun
        if noun.lower() in _PRENOMINAL:
            if not second or second.strip().lower() in _STOP:
                continue
            phrase += second
        elif comp and comp.split()[-1].lstrip("l'’").lower() not in _STOP and not second:
            phrase += " " + prep + comp
        out.append(re.sub(r"\s+", " ", phrase.replace("’", "'")))
    return out


def names(sentence: str) -> list[str]:
    """Capitalised words not at the start of the sentence (persons, places, titles)."""
    found = []
    for m in _NAME.finditer(sentence):
        if m.start() == 0 or m.group(1).lower() in _STOP:
            continue
        found.append(m.group(1))
    return found


def years(sentence: str) -> list[str]:
    return _YEAR.findall(sentence)


def with_de(phrase: str) -> str:
    """'de' + a noun phrase, contracted as French wants it: du, des, de l', d'un."""
    low = phrase.lower()
    for det, out in (("le ", "du "), ("les ", "des ")):
        if low.startswith(det):
            return out + phrase[len(det):]
    if low[:1] in "aeiouyéèêàâîôûh" and not low.startswith(("la ", "l'")):
        return "d'" + phrase
    return "de " + phrase


def with_a(phrase: str) -> str:
    """'à' + a noun phrase, contracted: au, aux."""
    low = phrase.lower()
    for det, out in (("le ", "au "), ("les ", "aux ")):
        if low.startswith(det):
            return out + phrase[len(det):]
    return "à " + phrase


def overlap(text: str, reference: str) -> float:
    """Share of `text`'s content words that occur in `reference` (1.0 when it has none)."""
    mine = content_words(text)
    if not mine:
        return 1.0
    theirs = set(content_words(reference))
    return sum(w in theirs for w in mine) / len(mine)
