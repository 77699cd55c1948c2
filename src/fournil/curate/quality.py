"""Document quality signals (Gopher, FineWeb, C4) and the rules that read them.

`quality_signals` measures; `quality_reason` decides. Signals are stored as columns so a
threshold can be changed later without recomputing anything, and a rejected document says
which rule family rejected it (`quality:gopher_repetition`, `quality:fineweb_punct`, ...).

The definitions follow datatrove's GopherQualityFilter, GopherRepetitionFilter,
FineWebQualityFilter and C4QualityFilter, with these deliberate changes:
- words come from one Unicode-aware regex (French elision `l'`/`qu'` split off, hyphenated
  words kept whole), not nltk/spaCy: the same on every machine and ~100x cheaper; a word
  without a letter is a digits-only word;
- duplicated 5..10-gram fractions count the characters of every word covered by a repeated
  n-gram occurrence (RedPajama-V2's `frac_chars_dupe_ngrams`), not datatrove's greedy
  skip-ahead scan: the same number on real repetition, and computable by refining the
  groups of repeated 5-grams instead of rescanning the text for each n;
- line-final punctuation also accepts French closing quotes and the ellipsis character;
  hyphen and dash lines are not bullets (French dialogue); Markdown heading markers are not
  hashtags; C4's policy phrases include their French equivalents.
Each signal is one pass over the words or the lines; no model, nothing downloaded.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import accumulate, compress, count
from operator import itemgetter, ne

from fournil.curate.config import DUP_NGRAMS, TOP_NGRAMS, QualityConfig
from fournil.text.stopwords import GOPHER_STOP_WORDS, STOP_WORDS

# A word: a word character, then word characters, inner hyphens and apostrophes (peut-être,
# c'est-à-dire), on lowercased text where every apostrophe is followed by a space first, so
# French elision splits off (l' homme, qu' il, jusqu' à). One cheap character-class loop; the
# price is that aujourd'hui and English don't count as two words each.
_TOKEN = re.compile(r"\w[\w'-]*")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_MARKDOWN_HEADING = re.compile(r"^#{1,6}(?= )", re.MULTILINE)

# FineWeb's line-final characters, plus French closing quotes and the ellipsis character
LINE_END_PUNCT = (".", "!", "?", '"', "'", "…", "»", "”", "’")
# C4's: a line must end with one of these and not with "..."
C4_END_PUNCT = (".", "!", "?", '"', "'", "»", "”", "’")
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
             "use cookies", "javascript", "politique de confidentialité",
             "conditions d'utilisation", "conditions générales d'utilisation",
             "utilise des cookies", "utilisation des cookies", "accepter les cookies")
# Gopher counts "•"; hyphens and dashes are left out: French dialogue lines start with them
BULLETS = ("•", "●", "▪", "‣", "◦", "►", "*")
SHORT_LINE_CHARS = 30  # FineWeb's short_line_length


# The signals, in column order. Integers are counts; the rest are fractions or ratios.
INT_SIGNALS = ("n_words", "n_lines", "max_line_chars", "stop_words")
FLOAT_SIGNALS = (
    "mean_word_len", "alpha_word_frac", "stop_word_frac", "hash_word_ratio",
    "ellipsis_word_ratio", "bullet_line_frac", "ellipsis_line_frac",
    "dup_line_frac", "dup_line_char_frac", "dup_para_frac", "dup_para_char_frac",
    *(f"top_{n}gram_char_frac" for n in TOP_NGRAMS),
    *(f"dup_{n}gram_char_frac" for n in DUP_NGRAMS),
    "line_punct_frac", "short_line_frac", "newline_word_ratio", "c4_drop_line_frac",
)
SIGNAL_NAMES = INT_SIGNALS + FLOAT_SIGNALS


def words_of(text: str) -> list[str]:
    """Lowercased words of `text`: elided prefixes (`l'`, `qu'`) apart, hyphenated words whole."""
    return _TOKEN.findall(text.lower().replace("’", "'").replace("'", "' "))


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(items seen before, their characters): datatrove's find_duplicates."""
    seen: set[str] = set()
    n_dup = chars = 0
    for item in items:
        if item in seen:
            n_dup += 1
            chars += len(item)
        else:
            seen.add(item)
    return n_dup, chars


def _ngrams(words: list[str], n: int) -> zip:
    return zip(*(words[k:] for k in range(n)), strict=False)


def _covered_chars(repeats: list[int], n: int, cum: list[int]) -> int:
    """Characters of the words covered by the n-grams starting at `repeats` (sorted)."""
    total, end = 0, 0
    for i in repeats:
        start = max(i, end)
        end = max(end, i + n)
        if end > start:
            total += cum[end] - cum[start]
    return total


def _ngram_signals(words: list[str], n_chars: int) -> dict[str, float]:
    """Gopher's top-n-gram (2..4) and duplicated-n-gram (5..10) character fractions."""
    out = {f"top_{n}gram_char_frac": 0.0 for n in TOP_NGRAMS}
    out.update({f"dup_{n}gram_char_frac": 0.0 for n in DUP_NGRAMS})
    n_words = len(words)
    if n_chars == 0:
        return out
    top_count = 0
    for n in TOP_NGRAMS:
        if n > n_words:
            return out
        # the most frequent n-gram (the earliest on ties, as Counter.most_common): its
        # characters with the joining spaces, times its count
        gram, top_count = max(Counter(_ngrams(words, n)).items(), key=itemgetter(1))
        out[f"top_{n}gram_char_frac"] = (sum(map(len, gram)) + n - 1) * top_count / n_chars
    if top_count == 1:
        return out  # no 4-gram repeats, so no longer n-gram does either

    grams = list(_ngrams(words, DUP_NGRAMS[0]))
    # earliest position of each n-gram (the reversed walk leaves the smallest index)
    first = dict(zip(reversed(grams), range(len(grams) - 1, -1, -1), strict=True))
    if len(first) == len(grams):
        return out
    # group the positions of each repeated n-gram, earliest first ...
    firsts = list(map(first.__getitem__, grams))
    groups: dict[int, list[int]] = {}
    for i in compress(count(), map(ne, firsts, count())):
        groups.setdefault(firsts[i], [firsts[i]]).append(i)
    cum = [0, *accumulate(map(len, words))]
    multi = list(groups.values())
    for n in DUP_NGRAMS:
        if not multi:
            break
        # ... every occurrence but the first is a repeat; its words are duplicated text
        repeats = sorted(i for group in multi for i in group[1:])
        out[f"dup_{n}gram_char_frac"] = _covered_chars(repeats, n, cum) / n_chars
        # ... and an (n+1)-gram repeats only where an n-gram does and the next word agrees
        refined = []
        for group in multi:
            by_next: dict[str, list[int]] = {}
            for i in group:
                if i + n < n_words:
                    by_next.setdefault(words[i + n], []).append(i)
            refined.extend(g for g in by_next.values() if len(g) > 1)
        multi = refined
    return out


def _hashes(text: str) -> int:
    """'#' symbols, Markdown heading markers aside (a heading is not a hashtag)."""
    n = text.count("#")
    if n:
        n -= sum(map(len, _MARKDOWN_HEADING.findall(text)))
    return n


def quality_signals(text: str, lang: str | None,
                    words: list[str] | None = None) -> dict[str, float | int]:
    """Every quality signal of `text` (Unicode-normalised, `\\n` line ends) as a flat dict.

    `words` may be passed if already computed (`words_of(text)`).
    """
    words = words_of(text) if words is None else words
    n_words = len(words)
    n_chars = len(text)
    lines = [line for line in text.split("\n") if line.strip()]
    n_lines = len(lines)
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]

    gopher_stop = GOPHER_STOP_WORDS.get(lang or "", frozenset())
    stop = STOP_WORDS.get(lang or "", frozenset())
    n_stop = sum(map(stop.__contains__, words))
    n_alpha = n_words - sum(map(str.isdigit, words))  # digits-only words have no letter

    s: dict[str, float | int] = {
        "n_words": n_words,
        "n_lines": n_lines,
        "max_line_chars": max(map(len, lines), default=0),
        "stop_words": sum(map(gopher_stop.__contains__, words)),
        "mean_word_len": sum(map(len, words)) / n_words if n_words else 0.0,
        "alpha_word_frac": n_alpha / n_words if n_words else 0.0,
        "stop_word_frac": n_stop / n_words if n_words else 0.0,
        "hash_word_ratio": _hashes(text) / n_words if n_words else 0.0,
        "ellipsis_word_ratio": ((text.count("...") + text.count("…")) / n_words
                                if n_words else 0.0),
    }
    stripped = [line.strip() for line in lines]
    n_short = n_punct = n_bullet = n_ellipsis = n_c4_drop = 0
    for line in stripped:
        n_short += len(line) <= SHORT_LINE_CHARS
        n_punct += line.endswith(LINE_END_PUNCT)
        n_bullet += line.startswith(BULLETS)
        ends_ellipsis = line.endswith(("...", "…"))
        n_ellipsis += ends_ellipsis
        if not line.endswith(C4_END_PUNCT) or ends_ellipsis or line.count(" ") < 2:
            n_c4_drop += 1
        else:
            lower = line.lower()
            n_c4_drop += any(p in lower for p in C4_POLICY)
    dup_lines, dup_line_chars = _duplicates(stripped)
    dup_paras, dup_para_chars = _duplicates([p.strip() for p in paragraphs])
    chars_no_newline = n_chars - text.count("\n")
    s.update({
        "bullet_line_frac": n_bullet / n_lines if n_lines else 0.0,
        "ellipsis_line_frac": n_ellipsis / n_lines if n_lines else 0.0,
        "dup_line_frac": dup_lines / n_lines if n_lines else 0.0,
        "dup_line_char_frac": dup_line_chars / chars_no_newline if chars_no_newline else 0.0,
        "dup_para_frac": dup_paras / len(paragraphs) if paragraphs else 0.0,
        "dup_para_char_frac": dup_para_chars / n_chars if n_chars else 0.0,
    })
    s.update(_ngram_signals(words, n_chars))
    s.update({
        "line_punct_frac": n_punct / n_lines if n_lines else 0.0,
        "short_line_frac": n_short / n_lines if n_lines else 0.0,
        "newline_word_ratio": text.count("\n") / n_words if n_words else 0.0,
        "c4_drop_line_frac": n_c4_drop / n_lines if n_lines else 0.0,
    })
    return s


def quality_reason(signals: dict[str, float | int], lang: str | None,
                   config: QualityConfig) -> str | None:
    """The first rule family `signals` fail under `config`'s thresholds for `lang`, or None."""
    c, s = config.filters_for(lang or ""), signals

    def above(name: str, limit: float | None) -> bool:
        return limit is not None and s[name] > limit

    def below(name: str, limit: float | None) -> bool:
        return limit is not None and s[name] < limit

    if below("n_words", config.min_words):
        return "quality:gopher_short"
    if below("mean_word_len", c.min_mean_word_len) or above("mean_word_len",
                                                            c.max_mean_word_len):
        return "quality:gopher_word_length"
    if above("hash_word_ratio", c.max_symbol_word_ratio) or above("ellipsis_word_ratio",
                                                                  c.max_symbol_word_ratio):
        return "quality:gopher_symbols"
    # a share of lines says little about a document of one or two lines (a paragraph)
    lines_judged = s["n_lines"] >= config.min_lines_for_line_rules
    if lines_judged and above("bullet_line_frac", c.max_bullet_line_frac):
        return "quality:gopher_bullets"
    if lines_judged and above("ellipsis_line_frac", c.max_ellipsis_line_frac):
        return "quality:gopher_ellipsis_lines"
    if below("alpha_word_frac", c.min_alpha_word_frac):
        return "quality:gopher_alpha"
    if lang in GOPHER_STOP_WORDS and below("stop_words", c.min_stop_words):
        return "quality:gopher_stop_words"
    if (above("dup_line_frac", c.max_dup_line_frac)
            or above("dup_line_char_frac", c.max_dup_line_char_frac)
            or above("dup_para_frac", c.max_dup_para_frac)
            or above("dup_para_char_frac", c.max_dup_para_char_frac)
            or any(above(f"top_{n}gram_char_frac", limit)
                   for n, limit in zip(TOP_NGRAMS, c.max_top_ngram_char_frac, strict=True))
            or any(above(f"dup_{n}gram_char_frac", limit)
                   for n, limit in zip(DUP_NGRAMS, c.max_dup_ngram_char_frac, strict=True))):
        return "quality:gopher_repetition"
    if lines_judged and below("line_punct_frac", c.min_line_punct_frac):
        return "quality:fineweb_punct"
    if lines_judged and above("short_line_frac", c.max_short_line_frac):
        return "quality:fineweb_short_lines"
    if above("dup_line_char_frac", c.max_fineweb_dup_line_char_frac):
        return "quality:fineweb_dup_lines"
    if above("newline_word_ratio", c.max_newline_word_ratio):
        return "quality:fineweb_list"
    if above("c4_drop_line_frac", c.max_c4_drop_line_frac):
        return "quality:c4_lines"
    return None
