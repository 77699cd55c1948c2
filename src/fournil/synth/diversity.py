"""How diverse a set of generated texts is: the figures that show whether synthetic data
collapsed onto a few patterns.

- distinct-n: unique word n-grams over all n-grams of all texts (Li et al. 2016); 1.0 when
  nothing repeats;
- compression ratio: bytes of the concatenated texts over their zlib-compressed bytes;
  repetitive data compresses more, so a higher ratio means less diversity;
- near-duplicate rate: the share of texts that MinHash-LSH (the curate stage's) finds to be
  a near copy of an earlier one;
- axis coverage: per constraint axis, the share of its values the samples used.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from fournil.curate.config import NearDedupConfig
from fournil.curate.minhash import find_duplicates, signatures
from fournil.synth.extract import words

# short texts (a question and a one-line answer): 3-word shingles, a lower threshold than
# curation's document-level dedup
NEAR_DUP = NearDedupConfig(shingles="words", shingle_size=3, bands=16, rows=8,
                           verify_threshold=0.7)


def distinct_n(texts: Sequence[str], n: int) -> float:
    grams = [tuple(ws[i:i + n]) for ws in map(words, texts) for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def compression_ratio(texts: Sequence[str]) -> float:
    data = "\n".join(texts).encode("utf-8")
    return len(data) / len(zlib.compress(data, 9)) if data else 0.0


def near_duplicate_rate(texts: Sequence[str], config: NearDedupConfig = NEAR_DUP) -> float:
    if len(texts) < 2:
        return 0.0
    ids = [str(i) for i in range(len(texts))]
    dups = find_duplicates(ids, np.asarray(signatures(list(texts), config)), config)
    return len(dups) / len(texts)


def diversity(texts: Sequence[str]) -> dict[str, float]:
    """All the figures for one set of texts (rounded for reports)."""
    return {"texts": len(texts),
            "distinct_1": round(distinct_n(texts, 1), 4),
            "distinct_2": round(distinct_n(texts, 2), 4),
            "distinct_3": round(distinct_n(texts, 3), 4),
            "compression_ratio": round(compression_ratio(texts), 4),
            "near_dup_rate": round(near_duplicate_rate(texts), 4)}
