"""MinHash near-dedup on real text: the bundled novellas cut into 2-4 KB documents, with
near-duplicates planted by small edits, reordered paragraphs, changed headers and footers,
case/whitespace changes and OCR rescans, and hard negatives (chapters of one novel, texts
sharing a quotation, short texts with one notice). Recall and precision are measured at the
default config; the OCR skeleton is checked on hand-derived inputs."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from fournil.curate.config import NearDedupConfig
from fournil.curate.minhash import (
    EMPTY,
    _fmix64,
    _one_permutation,
    find_duplicates,
    signature,
    signatures,
)
from fournil.curate.near_copies import (
    BOILERPLATES,
    LIBRARIES,
    NEAR_COPY_KINDS,
    add_furniture,
    chunk,
    insert_quotation,
    ocr_rescan,
    opening,
)
from fournil.curate.normalize import ocr_skeleton
from fournil.recipe import RecipeError

# the curate stage's near-dedup before the OCR-tolerant defaults (datatrove's settings)
WORDS_5 = NearDedupConfig(shingles="words", shingle_size=5, bands=14, rows=8,
                          verify_threshold=None)

NOVELLAS = Path(__file__).resolve().parents[2] / "data/cligs-textbox-fr/nouvelles19"


def novella_chunks(min_chars: int = 2000) -> list[str]:
    """Every novella cut into documents of >= `min_chars` (about 2-4 KB), one paragraph a
    line; paragraphs over 1 KB are cut at sentence ends so a document has several lines.
    The short tail of each novella is left out."""
    docs = []
    for path in sorted(NOVELLAS.glob("*.txt")):
        docs += [c for c in chunk(path.read_text(encoding="utf-8"), min_chars)
                 if len(c) >= min_chars]
    return docs


def variants(text: str, rng: random.Random) -> dict[str, str]:
    return {kind: make(text, rng) for kind, make in NEAR_COPY_KINDS.items()}


@pytest.fixture(scope="module")
def planted():
    """(ids, texts, group of each id): every 4th chunk gets one planted near-duplicate of
    each kind, all placed after the originals so the original is the one kept."""
    docs = novella_chunks()
    rng = random.Random(0)
    ids = [f"doc{i}" for i in range(len(docs))]
    texts = list(docs)
    group = {doc_id: doc_id for doc_id in ids}
    for i in range(0, len(docs), 4):
        for kind, text in variants(docs[i], rng).items():
            ids.append(f"doc{i}~{kind}")
            texts.append(text)
            group[ids[-1]] = f"doc{i}"
    return ids, texts, group


@pytest.fixture(scope="module")
def planted_sigs(planted):
    return signatures(planted[1], NearDedupConfig())


def test_recall_and_precision_on_planted_near_duplicates(planted, planted_sigs):
    ids, texts, group = planted
    assert len(texts) > 1000 and all(1500 < len(t) < 20_000 for t in texts)
    dup_of = find_duplicates(ids, planted_sigs, NearDedupConfig())
    planted_ids = [i for i in ids if "~" in i]
    found = [i for i in planted_ids if dup_of.get(i) == group[i]]
    correct = [i for i, keeper in dup_of.items() if group[i] == group[keeper]]
    recall, precision = len(found) / len(planted_ids), len(correct) / len(dup_of)
    missed = sorted(set(planted_ids) - set(found))
    assert recall >= 0.95, f"recall {recall:.3f}, missed {missed[:10]}"
    assert precision >= 0.99, f"precision {precision:.3f}"
    # the originals are always the ones kept: they come first
    assert not any(group[i] == i for i in dup_of)
    # cosmetic changes alone never hide a copy
    for kind in ("moved-paragraph", "new-header-footer", "case+wrap"):
        kind_ids = [i for i in planted_ids if i.endswith(f"~{kind}")]
        assert all(dup_of.get(i) == group[i] for i in kind_ids), kind


def test_every_document_is_kept_or_points_to_a_kept_one(planted, planted_sigs):
    ids = planted[0]
    dup_of = find_duplicates(ids, planted_sigs, NearDedupConfig())
    kept = [i for i in ids if i not in dup_of]
    assert len(kept) + len(dup_of) == len(ids)
    assert set(dup_of) <= set(ids)
    assert set(dup_of.values()) <= set(kept)  # a keeper is never itself dropped


def test_distinct_documents_of_the_same_author_are_not_merged(planted, planted_sigs):
    ids, texts, group = planted
    originals = [k for k, i in enumerate(ids) if group[i] == i]
    # chunks of the same novellas: same author, same style, same characters' names
    assert find_duplicates([ids[k] for k in originals], planted_sigs[originals],
                           NearDedupConfig()) == {}


def test_verification_keeps_planted_pairs_and_drops_weak_ones(planted, planted_sigs):
    ids, texts, group = planted
    # single words and a low LSH threshold (~0.22): prose of one language shares a quarter
    # of its vocabulary, so distinct documents become candidates. (Words, not letters: the
    # set of single letters is nearly the alphabet for every document, which no check of
    # the signature could tell apart.)
    loose = NearDedupConfig(shingles="words", shingle_size=1, bands=20, rows=2,
                            verify_threshold=None)
    sigs = signatures(texts, loose)
    unverified = find_duplicates(ids, sigs, loose)
    wrong = [i for i, k in unverified.items() if group[i] != group[k]]
    assert len(wrong) > 100
    loose.verify_threshold = 0.6
    verified = find_duplicates(ids, sigs, loose)
    assert all(group[i] == group[k] for i, k in verified.items())
    planted_ids = [i for i in ids if "~" in i]
    assert sum(verified.get(i) == group[i] for i in planted_ids) >= 0.95 * len(planted_ids)


def test_deterministic_and_first_in_order_is_kept(planted, planted_sigs):
    ids, texts, _ = planted
    config = NearDedupConfig()
    first = find_duplicates(ids, planted_sigs, config)
    assert np.array_equal(signatures(texts[:300], config), planted_sigs[:300])
    assert find_duplicates(list(ids), planted_sigs.copy(), config) == first
    # reversed input: each group's last planted variant now comes first and is kept
    back = find_duplicates(ids[::-1], planted_sigs[::-1], config)
    assert set(back) | set(back.values()) == set(first) | set(first.values())
    assert "doc0~edits-2+header" in back.values() and "doc0" in back
    # the seed picks the hash functions: signatures only compare under the same seed
    assert not np.array_equal(signatures(texts[:50], NearDedupConfig(seed=7)),
                              planted_sigs[:50])


def test_exact_duplicates_and_empty_texts():
    docs = novella_chunks()[:5]
    texts = [docs[0], docs[1], docs[0], "", "…  !!", docs[1].upper(), docs[2]]
    ids = ["a", "b", "a-copy", "empty", "punct", "b-upper", "c"]
    config = NearDedupConfig()
    sigs = signatures(texts, config)
    assert (sigs[3] == EMPTY).all() and (sigs[4] == EMPTY).all()
    # wordless texts are alike but never anyone's duplicate
    assert find_duplicates(ids, sigs, config) == {"a-copy": "a", "b-upper": "b"}


def test_short_texts_are_one_shingle():
    for config in (NearDedupConfig(), WORDS_5):
        assert np.array_equal(signature("Bonjour, Madame.", config),
                              signature("bonjour   MADAME", config))
        assert not np.array_equal(signature("Bonjour, Madame.", config),
                                  signature("Madame, bonjour.", config))
    # under 8 letters: one shingle, whatever the spacing, accents and look-alikes
    assert np.array_equal(signature("Été !", NearDedupConfig()),
                          signature("e t c", NearDedupConfig()))


def test_bad_shapes_and_config_errors():
    config = NearDedupConfig()
    with pytest.raises(ValueError, match=r"shape \(2, 192\)"):
        find_duplicates(["a", "b"], np.zeros((2, 100), np.uint32), config)
    with pytest.raises(RecipeError, match=r"curate\.near_dedup\.rows: must be >= 1"):
        NearDedupConfig(rows=0).validate("curate.near_dedup")
    with pytest.raises(RecipeError, match=r"curate\.near_dedup\.verify_threshold"):
        NearDedupConfig(verify_threshold=1.5).validate("curate.near_dedup")
    with pytest.raises(RecipeError, match=r"curate\.near_dedup\.shingles: must be one of "
                       r"letters, words, got 'chars'"):
        NearDedupConfig(shingles="chars").validate("curate.near_dedup")
    NearDedupConfig(verify_threshold=0.8).validate("curate.near_dedup")
    # the defaults: 64 x 3 = 192 values, candidates from Jaccard (1/64)^(1/3) = 0.25
    assert round(config.threshold, 2) == 0.25 and config.num_perm == 192
    assert round(WORDS_5.threshold, 2) == 0.72 and WORDS_5.num_perm == 112


# --- the OCR skeleton and OCR'd copies ------------------------------------------------------

def test_ocr_skeleton_on_hand_checked_inputs():
    # worked by hand: "Clé, 1'été 1830" -> NFKD, casefold, marks dropped: "cle", "l" (the
    # digit 1 read as l), "ete", "l830" with 0 read as o: "cleletel83o"; "cl" read as "d":
    # "deletel83o"; then l folded into i: "deietei83o"
    assert ocr_skeleton("Clé, 1'été 1830") == "deietei83o"
    # œ printed as two letters, u folded into n, s into f
    assert ocr_skeleton("Œuvres") == "oenvref"
    assert ocr_skeleton("… !! — « »\n") == ""
    assert ocr_skeleton("a\ud800b") == "ah"  # a lone surrogate is no letter (and b is h)
    # letters and digits of any script are kept, casefolded; emoji are not letters
    assert ocr_skeleton("Ελλάδα 東京 😀") == "ελλαδα東京"
    same = [
        ("fidèle", "ﬁdele", "FIDÈLE"),  # ligature, accent, case
        ("soleil", "ſoleil", "foleil"),  # long s, and long s read as f
        ("parapluie", "para- \npluie", "para pluie", "parap luie"),  # hyphen, split, merge
        ("moderne", "modeme"), ("clair", "dair"), ("wagon", "vvagon"),  # rn/m, cl/d, vv/w
        ("lettre", "Iettre", "1ettre"), ("une", "nne"), ("bien", "hien"), ("cette", "eette"),
        ("Il était", "I1 etait"),
    ]
    for variants in same:
        assert len({ocr_skeleton(v) for v in variants}) == 1, variants
    # what is not an OCR confusion still differs: other letters, other figures
    different = [("mer", "mur"), ("1830", "1831"), ("sale", "salé ou"), ("pain", "bain ")]
    for a, b in different:
        assert ocr_skeleton(a) != ocr_skeleton(b), (a, b)


def test_one_permutation_estimates_jaccard_even_with_empty_bins():
    """Densified one-permutation MinHash: each value agrees for two sets with probability
    equal to their Jaccard similarity, also when most of the 192 bins get no element."""
    def hashes(elements: range, seed: int) -> np.ndarray:
        return _fmix64(np.array(elements, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                       + np.uint64(seed))

    for a, b in ((range(0, 1000), range(500, 1500)),  # every bin filled
                 (range(0, 12), range(6, 18))):  # 18 elements: >= 174 of 192 bins empty
        jaccard = len(set(a) & set(b)) / len(set(a) | set(b))
        agree = [(_one_permutation(hashes(a, s), 192, s) ==
                  _one_permutation(hashes(b, s), 192, s)).mean() for s in range(200)]
        # one signature's agreement varies by ~0.05 (at most sqrt(J(1-J) / 18) = 0.11 for
        # 18 distinct values), so the mean of 200 by < 0.008: 0.025 is > 3 of that
        assert abs(np.mean(agree) - jaccard) < 0.025, (len(a), np.mean(agree), jaccard)
        assert np.std(agree) > 0  # the seeds do draw other hash functions


@pytest.fixture(scope="module")
def ocr_collection():
    """(ids, texts, group): novella chunks, each with a copy rescanned at 3% or 5% (with
    another library's page furniture for every third), and hard negatives: the chunks
    themselves (consecutive chapters of the same novellas), pairs of chunks quoting the same
    ~450-character passage, and short openings ending with the same notice."""
    docs = novella_chunks()[:140]
    rng = random.Random(3)
    ids, texts, group = [], [], {}

    def add(doc_id: str, text: str, of: str | None = None) -> None:
        ids.append(doc_id)
        texts.append(text)
        group[doc_id] = of or doc_id

    for i, doc in enumerate(docs[:60]):
        add(f"doc{i}", doc)
    for i, doc in enumerate(docs[:60]):
        copy = add_furniture(doc, rng, "La Morte amoureuse", LIBRARIES[i % len(LIBRARIES)])
        add(f"doc{i}~ocr", ocr_rescan(copy if i % 3 == 0 else doc, rng, 0.05 if i % 2 else 0.03),
            of=f"doc{i}")
    for q in range(20):
        quotation = opening(docs[100 + q], 400)[:600]
        for side in "ab":
            host = docs[60 + 2 * q + (side == "b")]
            add(f"quote{q}{side}", insert_quotation(host, quotation, rng))
    for n in range(20):
        add(f"notice{n}", opening(docs[120 + n], rng.randint(300, 500)) + "\n" + BOILERPLATES[0])
    return ids, texts, group


def test_ocr_copies_are_found_and_hard_negatives_are_not_merged(ocr_collection):
    ids, texts, group = ocr_collection
    assert all(len(t) >= 300 for t in texts)
    dup_of = find_duplicates(ids, signatures(texts, NearDedupConfig()), NearDedupConfig())
    copies = [i for i in ids if i.endswith("~ocr")]
    missed = [i for i in copies if dup_of.get(i) != group[i]]
    assert not missed, f"OCR'd copies not found: {missed}"
    wrong = {i: k for i, k in dup_of.items() if group[i] != group[k]}
    # no chapter merged with another, no quoting text with another, no notice with another
    assert not wrong, f"distinct documents merged: {wrong}"
    assert len(dup_of) == len(copies)
    # the word 5-grams of before found almost none of them: the test can tell them apart
    words_found = find_duplicates(ids, signatures(texts, WORDS_5), WORDS_5)
    assert sum(words_found.get(i) == group[i] for i in copies) < len(copies) / 4


def test_letter_signatures_are_deterministic(ocr_collection):
    texts = ocr_collection[1][:40]
    config = NearDedupConfig()
    first = signatures(texts, config)
    assert np.array_equal(signatures(list(texts), config), first)
    assert np.array_equal(signature(texts[3], config), first[3])
    assert first.dtype == np.uint32 and first.shape == (40, 192)
    other_seed = signatures(texts, NearDedupConfig(seed=2))
    assert not np.array_equal(other_seed, first)
    # a short text (most bins empty, filled by densification) is deterministic too
    short = "Une nuit d'été."
    assert np.array_equal(signature(short, config), signature(short, config))
    assert len(set(signature(short, config).tolist())) > 1
