"""Per-document curation: PII scrub, language ID, quality signals, OCR-noise flag, decision.

`annotate(record, config)` adds the signal columns of `SIGNAL_FIELDS` to a record (every
record gets every column; None where a step did not run) and returns a reject reason or None:
`empty`, `quality:huge_line`, `lang:<code>` (a language the recipe does not want),
`lang:low_score`, or the first failing quality rule family (`quality:gopher_repetition`, ...).
OCR noise never rejects: it sets `ocr_flag` so the document can go to correction.

The default thresholds keep every document of the shared corpus (19th-c. prose, 17th-c.
verse theatre, cleaned Wikipedia with its infobox lines, a government methodology page):
datatrove's English Gopher defaults rejected most real technical documents, and FineWeb-2's
French settings reject formulaic administrative text (2 KB chunks of the RGAA methodology
repeat 30% of their 5-grams at the median). Each default below says what it was measured
against; FineWeb-2's French value is given where ours differs, for recipes that want it.
TOML has no null: a `max_*` rule is disabled by a value it cannot exceed, a `min_*` by 0.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields

import pyarrow as pa

from fournil.core.validation import check as _check
from fournil.curate.langid import detect
from fournil.curate.ocr_score import ocr_noise_score
from fournil.curate.pii import PLACEHOLDERS, scrub_pii
from fournil.curate.quality import (
    DUP_NGRAMS,
    FLOAT_SIGNALS,
    INT_SIGNALS,
    TOP_NGRAMS,
    quality_reason,
    quality_signals,
    words_of,
)

_LANG_CODE = re.compile(r"[a-z]{2,3}")


@dataclass
class LanguageFilters:
    """Thresholds for one language. `None` (Python only) or a neutral value disables a rule."""

    # fastText lid.176 probability; clean French prose scores 0.95-0.99, a bundled Wikipedia
    # article with a long infobox 0.79 (FineWeb: 0.65; FineWeb-2 fr, GlotLID: 0.82)
    min_lang_score: float | None = 0.65
    # Gopher quality (FineWeb-2 fr: word length 2-11, alpha 0.812, its 18 stop words >= 2)
    min_mean_word_len: float | None = 2.0
    max_mean_word_len: float | None = 11.0
    max_symbol_word_ratio: float | None = 0.1  # '#' (not Markdown headings) or ellipses per word
    max_bullet_line_frac: float | None = 0.9  # '•'-like marks; dialogue dashes are not
    max_ellipsis_line_frac: float | None = 0.5  # a novella: 0.27 (Gopher: 0.3)
    min_alpha_word_frac: float | None = 0.7  # Wikipedia with infobox numbers: 0.84
    min_stop_words: int | None = 2
    # Gopher repetition, loosened for formulaic administrative text: the whole RGAA page has
    # 64% duplicated lines and 54% of its characters in repeated 10-grams (Gopher: 0.3 lines,
    # 0.2 line chars, 0.3/0.2 paragraphs, 5..10-grams 0.15..0.10; FineWeb-2 fr: 0.264 lines)
    max_dup_line_frac: float | None = 0.7
    max_dup_line_char_frac: float | None = 0.6
    max_dup_para_frac: float | None = 0.7
    max_dup_para_char_frac: float | None = 0.6
    # top 2-, 3-, 4-gram (Gopher's values; FineWeb-2 fr 0.161, 0.149, 0.134)
    max_top_ngram_char_frac: list[float] = field(default_factory=lambda: [0.2, 0.18, 0.16])
    # duplicated 5- to 10-grams
    max_dup_ngram_char_frac: list[float] = field(
        default_factory=lambda: [0.7, 0.68, 0.66, 0.64, 0.62, 0.6])
    # FineWeb: Wikipedia articles with infobox lines end 6% of their lines with punctuation
    # (FineWeb 0.12, FineWeb-2 fr 0.1); verse theatre has 22% short lines, Wikipedia 65%
    # (FineWeb 0.67); FineWeb's 0.01 duplicated-line characters rejects any formulaic text,
    # so it is off; newlines per word: Wikipedia 0.19, verse 0.13 (FineWeb 0.3, FineWeb-2 fr
    # 0.185)
    min_line_punct_frac: float | None = 0.05
    max_short_line_frac: float | None = 0.75
    max_fineweb_dup_line_char_frac: float | None = None
    max_newline_word_ratio: float | None = 0.3
    # C4's line rules would drop 65% of verse lines (no final punctuation): a signal only
    max_c4_drop_line_frac: float | None = None

    def validate(self, key: str) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)):
                _check(value >= 0, f"{key}.{f.name}", f"must be >= 0, got {value}")
            if isinstance(value, float) and f.name.endswith(("_frac", "_score")):
                _check(value <= 1, f"{key}.{f.name}", f"must be in [0, 1], got {value}")
        for name, sizes in (("max_top_ngram_char_frac", TOP_NGRAMS),
                            ("max_dup_ngram_char_frac", DUP_NGRAMS)):
            values = getattr(self, name)
            _check(len(values) == len(sizes), f"{key}.{name}",
                   f"needs {len(sizes)} values (n = {', '.join(map(str, sizes))}), "
                   f"got {len(values)}")
            _check(all(0.0 <= v <= 1.0 for v in values), f"{key}.{name}",
                   "values must be in [0, 1]")


@dataclass
class QualityConfig:
    """Language, quality and PII settings of the curate stage (`[curate.quality]`)."""

    languages: list[str] = field(default_factory=lambda: ["fr", "en"])
    # thresholds per language; a language of `languages` without an entry gets the defaults
    per_language: dict[str, LanguageFilters] = field(
        default_factory=lambda: {"fr": LanguageFilters(), "en": LanguageFilters()})
    # a longer line is not prose (minified code, base64, a broken extraction): the longest
    # bundled paragraph is 13 K characters
    max_line_chars: int = 100_000
    # Gopher's is 50; a 200-character paragraph (curate.min_chars) has ~35 French words
    min_words: int = 30
    # the line-share rules (bullets, ellipsis lines, final punctuation, short lines) judge
    # documents of at least this many non-empty lines: one unfinished paragraph is not a
    # menu (FineWeb: 1)
    min_lines_for_line_rules: int = 3
    pii: bool = True
    ocr_flag_threshold: float = 0.5  # clean text: < 0.12 (markup-heavy Wikipedia 0.47)

    def validate(self, key: str) -> None:
        _check(len(self.languages) > 0, f"{key}.languages", "at least one language is needed")
        for i, lang in enumerate(self.languages):
            _check(bool(_LANG_CODE.fullmatch(lang)), f"{key}.languages[{i}]",
                   f"expected an ISO 639 code such as 'fr', got {lang!r}")
        for lang, filters in self.per_language.items():
            _check(bool(_LANG_CODE.fullmatch(lang)), f"{key}.per_language.{lang}",
                   "expected an ISO 639 code such as 'fr'")
            filters.validate(f"{key}.per_language.{lang}")
        _check(self.max_line_chars > 0, f"{key}.max_line_chars", "must be > 0")
        _check(self.min_words >= 0, f"{key}.min_words", "must be >= 0")
        _check(self.min_lines_for_line_rules >= 0, f"{key}.min_lines_for_line_rules",
               "must be >= 0")
        _check(0.0 <= self.ocr_flag_threshold <= 1.0, f"{key}.ocr_flag_threshold",
               f"must be in [0, 1], got {self.ocr_flag_threshold}")

    def filters_for(self, lang: str) -> LanguageFilters:
        filters = self.per_language.get(lang)
        return filters if filters is not None else _DEFAULT_FILTERS


_DEFAULT_FILTERS = LanguageFilters()

_FLOAT = pa.float32()
SIGNAL_FIELDS: list[pa.Field] = [
    pa.field("lang", pa.string()),
    pa.field("lang_score", _FLOAT),
    pa.field("ocr_noise", _FLOAT),
    pa.field("ocr_flag", pa.bool_()),
    pa.field("pii_counts", pa.string()),  # JSON object: replacements per kind
    *(pa.field(name, pa.int64()) for name in INT_SIGNALS),
    *(pa.field(name, _FLOAT) for name in FLOAT_SIGNALS),
]
SIGNAL_NAMES = [f.name for f in SIGNAL_FIELDS]


def annotate(record: dict, config: QualityConfig) -> str | None:
    """Add the signal columns to `record` (its `text` Unicode-normalised); PII in `text` is
    replaced. Returns the reason to reject the record, or None to keep it."""
    record.update(dict.fromkeys(SIGNAL_NAMES))
    text = record["text"]
    if not text or text.isspace():
        return "empty"
    # before the regexes of the PII scrub, which a multi-megabyte line would slow down
    if max(map(len, text.split("\n"))) > config.max_line_chars:
        return "quality:huge_line"
    if config.pii:
        text, counts = scrub_pii(text)
        record["text"] = text
        record["pii_counts"] = json.dumps({k: counts[k] for k in PLACEHOLDERS if counts[k]})

    lang, score = detect(text)
    record["lang"], record["lang_score"] = lang, score
    if lang not in config.languages:
        return f"lang:{lang}"
    words = words_of(text)
    signals = quality_signals(text, lang, words)
    record.update(signals)
    noise = ocr_noise_score(text, lang, words)
    record["ocr_noise"], record["ocr_flag"] = noise, noise >= config.ocr_flag_threshold

    min_score = config.filters_for(lang).min_lang_score
    if min_score is not None and score < min_score:
        return "lang:low_score"
    return quality_reason(signals, lang, config)
