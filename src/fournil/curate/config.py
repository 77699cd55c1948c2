"""The curate stage's settings (`[curate]` and its sections): the license policy, Unicode
form, minimum length, language and quality thresholds, near-dedup, and where the work runs.

Plain dataclasses that import nothing heavier than the standard library, so that loading a
recipe stays light; the code that applies them is filters.py, quality.py and minhash.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from fournil.core.settings import ExecutorSettings
from fournil.core.validation import check as _check
from fournil.provenance.licenses import DEFAULT_ALLOWED, normalize_license

_LANG_CODE = re.compile(r"[a-z]{2,3}")
TOP_NGRAMS = (2, 3, 4)  # the n of Gopher's top n-gram rules
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)  # the n of its duplicated n-gram rules
SHINGLES = ("letters", "words")


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


@dataclass
class NearDedupConfig:
    """MinHash + LSH near-duplicate removal (the `curate.near_dedup` recipe section).

    The defaults are what bench/near_dup_bench.py measured on planted copies of the kind OCR'd
    collections hold (2-5% of characters misread, page furniture, paragraphs swapped at page
    breaks, cut 70-90% the same, word edits, combinations) and hard negatives (chapters of
    one book, texts quoting one passage, short documents with one notice): every planted
    pair found and no hard-negative pair merged, where the defaults before (datatrove's word
    5-grams, 14 x 8, no check) found 55% and no copy with 3% of its characters misread.
    bench/README.md has the table and the alternatives tried.
    """

    enabled: bool = True
    # "letters": k-grams of the OCR skeleton, one-permutation MinHash (see the module
    # docstring); "words": word n-grams, k-permutation MinHash (datatrove's). Word 5-grams
    # cannot survive OCR noise: a 25-character shingle is intact at 3% noise with p ~0.47
    shingles: str = "letters"
    # letters (or words) per shingle. Measured: 6 to 8 letters found every planted pair; 5
    # made 8x as many LSH candidates (4.0 pairs per document, against 0.49 at 8: distinct
    # texts share short k-grams); 10 and 12 lost 8% and 41% of the copies scanned twice at 5%
    shingle_size: int = 8
    # LSH: candidates from Jaccard ~(1/bands)^(1/rows) = 0.25. The OCR'd copies' Jaccard is
    # 0.4-0.9: 14 x 8 (knee 0.72) found 78% of the planted pairs, 20 x 5 (0.55) 95%, 40 x 3
    # and 64 x 3 all of them, 32 x 4 99.4%; 96 x 2 too, with 2.5x the candidates
    bands: int = 64
    rows: int = 3  # signature values per band
    seed: int = 1  # of the hash functions: signatures only compare under the same seed
    # candidate pairs must also agree on this share of the full signature (an estimate of
    # their Jaccard similarity); None keeps every LSH candidate. Loose bands need it: 64 x 3
    # unchecked merged 83 hard-negative pairs (precision 0.92); at 0.30 and 0.35, 4 and 1
    # pairs of short documents ending with one notice; at 0.45 one planted pair was lost.
    # Planted pairs agreed on >= 0.40 (1st percentile 0.46), hard negatives on <= 0.37
    # (99th percentile 0.34); 192 values make the estimate's spread ~0.035 at J = 0.35
    verify_threshold: float | None = 0.40

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    @property
    def threshold(self) -> float:
        """The Jaccard similarity at which a pair becomes a candidate with probability ~1/2."""
        return (1 / self.bands) ** (1 / self.rows)

    def validate(self, key: str) -> None:
        _check(self.shingles in SHINGLES, f"{key}.shingles",
               f"must be one of {', '.join(SHINGLES)}, got {self.shingles!r}")
        _check(self.shingle_size >= 1, f"{key}.shingle_size", "must be >= 1")
        _check(self.bands >= 1, f"{key}.bands", "must be >= 1")
        _check(self.rows >= 1, f"{key}.rows", "must be >= 1")
        _check(self.seed >= 0, f"{key}.seed", "must be >= 0")
        _check(self.verify_threshold is None or 0 < self.verify_threshold <= 1,
               f"{key}.verify_threshold", f"must be in (0, 1], got {self.verify_threshold}")


@dataclass
class CurateConfig(ExecutorSettings):
    allowed_licenses: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED))
    unicode_form: str = "NFC"
    min_chars: int = 200
    quality: QualityConfig = field(default_factory=QualityConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    task_rows: int = 2000  # documents per task (whole Parquet row groups)

    def validate(self, key: str) -> None:
        _check(self.unicode_form in ("NFC", "NFKC"), f"{key}.unicode_form", "NFC or NFKC")
        _check(self.min_chars >= 0, f"{key}.min_chars", "must be >= 0")
        super().validate(key)
        _check(self.task_rows > 0, f"{key}.task_rows", "must be > 0")
        self.quality.validate(f"{key}.quality")
        self.near_dedup.validate(f"{key}.near_dedup")
        for i, lic in enumerate(self.allowed_licenses):
            spdx = normalize_license(lic)
            _check(spdx != "LicenseRef-Unknown", f"{key}.allowed_licenses[{i}]",
                   f"unknown license {lic!r}")
            self.allowed_licenses[i] = spdx
