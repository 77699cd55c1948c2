"""Near-duplicate detection: MinHash signatures, LSH banding, clusters with one keeper each.

A document becomes a set of shingles, each hashed to 64 bits, and then a signature of
`bands * rows` 32-bit values; two documents agree on one signature value with probability
equal to the Jaccard similarity of their shingle sets. Two kinds of shingles:

- `letters` (the default): k-grams of the document's OCR skeleton (`normalize.ocr_letters`:
  letters and digits only, casefolded; accents, spacing and OCR look-alikes folded), so that
  two scans of one book, whose texts differ in 2-5% of their characters, still share most
  shingles.
  A document has ~5x more letter shingles than words, so the signature is a one-permutation
  MinHash (Li, Owen & Zhang 2012): one hash per shingle, its high bits pick one of
  `bands * rows` bins and the bin keeps its lowest low bits; empty bins borrow a filled
  one's value by "optimal densification" (Shrivastava 2017), which keeps every value an
  unbiased Jaccard estimate. The cost is one pass over the shingles, whatever `bands * rows`.
- `words`: casefolded word n-grams (datatrove's shingles), each hashed with xxh3 and then
  permuted by `bands * rows` universal hash functions, keeping each function's minimum
  (the classic k-permutation MinHash; its cost grows with shingles x permutations).

`find_duplicates` groups documents whose signatures agree on a whole band (`rows` values):
that happens with probability `1 - (1 - J^rows)^bands`, an S-curve around
`(1/bands)^(1/rows)`. Candidate pairs are then checked against the full signature
(`verify_threshold`, the share of agreeing values: an estimate of their Jaccard similarity),
which removes pairs the loose bands let in; union-find clusters keep their first document in
input order, and every other member is dropped with `dup_of` = that keeper.

Everything is numpy over whole arrays, and the LSH step is sort-based, so ~1M documents fit
one machine: signatures take `4 * bands * rows` bytes per document.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import xxhash

from fournil.curate.config import NearDedupConfig
from fournil.curate.normalize import ocr_letters

# letters, digits and underscores of any script; punctuation and spaces separate words
_WORD = re.compile(r"\w+")
# a text with no words gets this signature and is never anyone's near-duplicate
EMPTY = np.uint32(0xFFFFFFFF)
# shingles hashed per block, so a book-length document never builds a huge matrix
_BLOCK = 2048
_MIX1, _MIX2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_POLY = np.uint64(0x9E3779B97F4A7C15)
_LOW32 = np.uint64(0xFFFFFFFF)
_UNFILLED = np.uint64(1 << 32)  # above every 32-bit value: a bin no shingle fell into


def words(text: str) -> list[str]:
    """The words MinHash sees: casefolded runs of word characters, punctuation dropped."""
    return _WORD.findall(text.casefold())


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit affects every output bit."""
    x = x ^ (x >> np.uint64(33))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(33))
    x = x * _MIX2
    return x ^ (x >> np.uint64(33))


def shingle_ids(text: str, shingle_size: int) -> np.ndarray:
    """32-bit ids (in uint64) of the text's word n-grams; a text shorter than n words is one
    shingle, a text without words has none."""
    ws = words(text)
    if not ws:
        return np.empty(0, np.uint64)
    h = np.fromiter(map(xxhash.xxh3_64_intdigest, map(str.encode, ws)), dtype=np.uint64,
                    count=len(ws))
    n = min(shingle_size, len(ws))
    m = len(ws) - n + 1
    ids = h[:m].copy()
    for k in range(1, n):  # order-sensitive polynomial over the n word hashes
        ids = ids * _POLY + h[k:k + m]
    return _fmix64(ids) >> np.uint64(32)


def letter_shingle_hashes(text: str, shingle_size: int, seed: int) -> np.ndarray:
    """64-bit hashes of the k-grams of `text`'s OCR skeleton (k = `shingle_size` letters);
    a skeleton shorter than k is one shingle, a text without letters has none."""
    letters = ocr_letters(text).astype(np.uint64)
    if letters.size == 0:
        return np.empty(0, np.uint64)
    n = min(shingle_size, letters.size)
    m = letters.size - n + 1
    ids = letters[:m].copy()
    for k in range(1, n):  # order-sensitive polynomial over the k code points
        ids = ids * _POLY + letters[k:k + m]
    return _fmix64(ids ^ _salt(seed, 1))


@lru_cache(maxsize=16)
def _permutations(seed: int, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
    return a, b


def _salt(seed: int, purpose: int) -> np.uint64:
    """A 64-bit constant per (seed, purpose): different seeds give unrelated hashes."""
    return _fmix64(np.array([seed << 8 | purpose], np.uint64))[0]


def _bin_of(h: np.ndarray, num_bins: int) -> np.ndarray:
    """A bin in [0, num_bins) from the high 32 bits of 64-bit hashes (multiply-shift, no
    modulo bias worth the name)."""
    return ((h >> np.uint64(32)) * np.uint64(num_bins)) >> np.uint64(32)


def _one_permutation(h: np.ndarray, num_bins: int, seed: int) -> np.ndarray:
    """One-permutation MinHash of 64-bit shingle hashes, densified: `num_bins` uint64 values.

    A bin that no shingle fell into takes the value of another bin, chosen by hashing (the
    empty bin, the attempt number, the seed) until a filled one comes up: the choice depends
    on which bins are filled, not on the document, so two documents copy from the same bin
    whenever their filled bins agree, and each value stays equal for two documents with
    probability equal to their Jaccard similarity (Shrivastava 2017, "Optimal
    densification for fast and accurate minwise hashing").
    """
    values = np.full(num_bins, _UNFILLED, np.uint64)
    np.minimum.at(values, _bin_of(h, num_bins).astype(np.intp), h & _LOW32)
    filled = values != _UNFILLED
    empty = np.flatnonzero(~filled)
    if filled.sum() == 1:  # every attempt ends on the one filled bin
        values[empty] = values[filled][0]
        return values
    salt = _salt(seed, 2)
    attempt = np.uint64(0)
    while empty.size:
        attempt += np.uint64(1)
        key = ((empty.astype(np.uint64) << np.uint64(32)) + attempt) ^ salt
        source = _bin_of(_fmix64(key), num_bins).astype(np.intp)
        hit = filled[source]
        values[empty[hit]] = values[source[hit]]
        empty = empty[~hit]
    return values


def signature(text: str, config: NearDedupConfig) -> np.ndarray:
    """The MinHash signature of `text`: `config.num_perm` uint32 values.

    Letter shingles: `_one_permutation` over their 64-bit hashes. Word shingles: multiply-
    add-shift permutations, `((a*x + b) mod 2^64) >> 32` with odd random 64-bit `a` and 32-bit
    `x`: a strongly universal family (Dietzfelbinger 1996) that costs one multiply and one add
    in wrapping uint64 arithmetic, where `(a*x + b) mod p` would need 128-bit products or a
    slow 64-bit modulo. The shift commutes with the minimum, so it is applied once per
    signature, not once per shingle.
    """
    if config.shingles == "letters":
        h = letter_shingle_hashes(text, config.shingle_size, config.seed)
        if h.size == 0:
            return np.full(config.num_perm, EMPTY, np.uint32)
        return _one_permutation(h, config.num_perm, config.seed).astype(np.uint32)
    ids = shingle_ids(text, config.shingle_size)
    if ids.size == 0:
        return np.full(config.num_perm, EMPTY, np.uint32)
    a, b = _permutations(config.seed, config.num_perm)
    low = None
    for start in range(0, ids.size, _BLOCK):
        block = ids[start:start + _BLOCK, None] * a
        block += b
        block_min = block.min(axis=0)
        low = block_min if low is None else np.minimum(low, block_min)
    return (low >> np.uint64(32)).astype(np.uint32)


def signatures(texts: list[str], config: NearDedupConfig) -> np.ndarray:
    """Signatures of many texts, one row each: a picklable unit of work for an executor."""
    out = np.empty((len(texts), config.num_perm), np.uint32)
    for i, text in enumerate(texts):
        out[i] = signature(text, config)
    return out


def _band_keys(block: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of a (docs, rows) band; equal bands give equal keys."""
    key = np.zeros(block.shape[0], np.uint64)
    for r in range(block.shape[1]):
        key = _fmix64(key * _POLY + block[:, r].astype(np.uint64))
    return key


def _candidate_pairs(sigs: np.ndarray, config: NearDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index pairs, i < j, of documents sharing at least one whole band.

    Each band is grouped by sorting its keys; every member of a group is paired with the
    group's first (lowest) index, a star rather than all pairs, so a bucket of k copies
    costs k - 1 pairs, not k^2 / 2, and keeps the same connected components.
    """
    live = np.flatnonzero(~(sigs == EMPTY).all(axis=1))
    if live.size < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    firsts, others = [], []
    positions = np.arange(live.size)
    for band in range(config.bands):
        keys = _band_keys(sigs[live, band * config.rows:(band + 1) * config.rows])
        order = np.argsort(keys, kind="stable")  # stable: a group's first is its lowest index
        sorted_keys, docs = keys[order], live[order]
        starts = np.ones(live.size, bool)
        starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
        group_first = docs[np.maximum.accumulate(np.where(starts, positions, 0))]
        firsts.append(group_first[~starts])
        others.append(docs[~starts])
    pair = np.unique(np.concatenate(firsts) * sigs.shape[0] + np.concatenate(others))
    return pair // sigs.shape[0], pair % sigs.shape[0]


def _verified(sigs: np.ndarray, i: np.ndarray, j: np.ndarray, threshold: float,
              chunk: int = 65_536) -> np.ndarray:
    """Mask of the pairs whose signatures agree on at least `threshold` of their values."""
    keep = np.empty(i.size, bool)
    for s in range(0, i.size, chunk):
        agree = (sigs[i[s:s + chunk]] == sigs[j[s:s + chunk]]).mean(axis=1)
        keep[s:s + chunk] = agree >= threshold
    return keep


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """For each node, the lowest index of its connected component.

    Vectorised union-find: hook every edge's larger root under its smaller one, then jump
    pointers until every node points at a root; repeat until each edge's ends share a root.
    Roots only ever point lower, so a component's root ends up its minimum index.
    """
    root = np.arange(n)
    while True:
        ri, rj = root[i], root[j]
        differ = ri != rj
        if not differ.any():
            return root
        lo, hi = np.minimum(ri[differ], rj[differ]), np.maximum(ri[differ], rj[differ])
        np.minimum.at(root, hi, lo)
        while True:
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped


def find_duplicates(ids: list[str], signatures: np.ndarray,
                    config: NearDedupConfig) -> dict[str, str]:
    """Map each near-duplicate's id to the id kept for its cluster (the first in `ids` order).

    `signatures[k]` is the signature of `ids[k]`. Deterministic: the same ids, signatures
    and config always give the same mapping.
    """
    sigs = np.asarray(signatures)
    if sigs.ndim != 2 or sigs.shape != (len(ids), config.num_perm):
        raise ValueError(f"signatures must have shape ({len(ids)}, {config.num_perm}) "
                         f"for {len(ids)} ids and {config.bands} x {config.rows} bands, "
                         f"got {sigs.shape}")
    i, j = _candidate_pairs(sigs, config)
    if config.verify_threshold is not None and i.size:
        keep = _verified(sigs, i, j, config.verify_threshold)
        i, j = i[keep], j[keep]
    root = _components(len(ids), i, j)
    return {ids[k]: ids[root[k]] for k in np.flatnonzero(root != np.arange(len(ids)))}
