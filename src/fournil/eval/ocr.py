"""OCR correction: character and word error rates of noisy text before correction and of the
model's correction after, against the clean text.

The model gets `fournil.formats.prompts.ocr_messages(noisy)` (the chat synth and SFT use) and
answers greedily. Rates are corpus-level, as in the ICDAR post-OCR competitions: the edit
distances of all items summed, divided by the summed length of the references, so a long
page weighs more than a short line. Edit distances are rapidfuzz's Levenshtein (insertion,
deletion, substitution: 1 each), over characters for CER and over words for WER.

Normalisation, applied to the reference and to both hypotheses alike: Unicode NFC, runs of
whitespace (line breaks included) collapsed to one space, ends stripped. Case, accents and
punctuation are kept: restoring them is what OCR correction is for. Words are what lies
between spaces (punctuation stays attached, as in jiwer's and ICDAR's word counts).

Two readers give (noisy, clean) pairs: fournil synth samples of task "ocr" (see
`fournil.eval.tasks`) and ICDAR 2017/2019 post-OCR files, whose three lines are

    [OCR_toInput] the OCR output
    [OCR_aligned] the OCR output, with '@' where the gold standard has extra characters
    [ GS_aligned] the gold standard, with '@' where the OCR has extra characters, and '#'
                  over OCR characters that have no gold standard

'#' stretches are left out (nothing to compare against); what remains is cut into pieces
of at most `max_chars` characters at spaces both aligned lines share, so each pair fits a
small model's context.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from fournil.eval.lm import LanguageModel, PromptTooLong
from fournil.formats.prompts import ocr_messages

_SPACES = re.compile(r"\s+")
PREFIXES = ("[OCR_toInput] ", "[OCR_aligned] ", "[ GS_aligned] ")
GAP, NO_GOLD = "@", "#"


@dataclass(frozen=True)
class Pair:
    id: str
    noisy: str
    clean: str


def normalize(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def char_errors(hypothesis: str, reference: str) -> tuple[int, int]:
    """(edit distance in characters, reference length) after normalisation."""
    hyp, ref = normalize(hypothesis), normalize(reference)
    return Levenshtein.distance(hyp, ref), len(ref)


def word_errors(hypothesis: str, reference: str) -> tuple[int, int]:
    """(edit distance in words, reference length in words) after normalisation."""
    hyp, ref = normalize(hypothesis).split(), normalize(reference).split()
    return Levenshtein.distance(hyp, ref), len(ref)


def cer(hypothesis: str, reference: str) -> float:
    errors, length = char_errors(hypothesis, reference)
    return errors / length


def wer(hypothesis: str, reference: str) -> float:
    errors, length = word_errors(hypothesis, reference)
    return errors / length


def pairs_from_samples(rows: Sequence[dict]) -> list[Pair]:
    """Pairs from synth samples of task "ocr" (meta {"noisy", "clean"})."""
    pairs = []
    for row in rows:
        meta = row["meta"]
        for key in ("noisy", "clean"):
            if not isinstance(meta.get(key), str):
                raise ValueError(f"sample {row['id']}: meta has no string {key!r} "
                                 f"(keys: {sorted(meta)})")
        pairs.append(Pair(row["id"], meta["noisy"], meta["clean"]))
    return pairs


def _aligned_pieces(ocr: str, gold: str, max_chars: int) -> list[tuple[str, str]]:
    """Cuts two aligned strings at '#' stretches and, within at most `max_chars`
    characters, at the last position where both have a space."""
    pieces, start = [], 0
    n = len(gold)
    while start < n:
        if gold[start] == NO_GOLD:
            start += 1
            continue
        end = start
        while end < n and gold[end] != NO_GOLD and end - start < max_chars:
            end += 1
        if end < n and gold[end] != NO_GOLD:  # cut for length: back up to a shared space
            spaces = [i for i in range(end, start, -1) if ocr[i] == " " and gold[i] == " "]
            end = spaces[0] if spaces else end
        pieces.append((ocr[start:end], gold[start:end]))
        start = end
    return pieces


def read_icdar(path: str | Path, max_chars: int = 400) -> list[Pair]:
    """Pairs from an ICDAR post-OCR file, or from every .txt file under a folder (sorted).
    Ids are `<file stem>:<piece>`."""
    path = Path(path)
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no .txt files in ICDAR post-OCR format")
    pairs = []
    for file in files:
        lines = file.read_text(encoding="utf-8-sig").split("\n")
        found = {}
        for line in lines:
            for prefix in PREFIXES:
                if line.startswith(prefix):
                    found[prefix] = line[len(prefix):].rstrip("\r")
        missing = [p.strip() for p in PREFIXES[1:] if p not in found]
        if missing:
            raise ValueError(f"{file}: not an ICDAR post-OCR file: no {', '.join(missing)} line")
        ocr, gold = found[PREFIXES[1]], found[PREFIXES[2]]
        if len(ocr) != len(gold):
            raise ValueError(f"{file}: the aligned lines differ in length ({len(ocr)} and "
                             f"{len(gold)} characters): the alignment is broken")
        for k, (o, g) in enumerate(_aligned_pieces(ocr, gold, max_chars)):
            noisy, clean = normalize(o.replace(GAP, "")), normalize(g.replace(GAP, ""))
            if clean:
                pairs.append(Pair(f"{file.stem}:{k}", noisy, clean))
    return pairs


def evaluate_ocr(lm: LanguageModel, pairs: Sequence[Pair], max_new_tokens: int = 512) -> dict:
    """{"n", "rejected", "cer_before", "cer_after", "wer_before", "wer_after", "items"}.

    A correction is about as long as its input, so generation stops at twice the input's
    tokens (plus a margin) if the model does not end its turn first. Items whose prompt
    does not fit the context are rejected with a reason, and the rates are over the others.
    """
    items, rejected = [], []
    sums = dict.fromkeys(("c_before", "c_after", "chars", "w_before", "w_after", "words"), 0)
    for pair in pairs:
        if not normalize(pair.clean):
            rejected.append({"id": pair.id, "reason": "ocr:empty_reference"})
            continue
        budget = min(max_new_tokens, 2 * len(lm.encode(pair.noisy)) + 16)
        try:
            output = lm.chat(ocr_messages(pair.noisy), budget)
        except PromptTooLong as e:
            rejected.append({"id": pair.id, "reason": "ocr:prompt_too_long", "detail": str(e)})
            continue
        c_before, chars = char_errors(pair.noisy, pair.clean)
        c_after, _ = char_errors(output, pair.clean)
        w_before, words = word_errors(pair.noisy, pair.clean)
        w_after, _ = word_errors(output, pair.clean)
        for key, value in (("c_before", c_before), ("c_after", c_after), ("chars", chars),
                           ("w_before", w_before), ("w_after", w_after), ("words", words)):
            sums[key] += value
        items.append({"id": pair.id, "noisy": pair.noisy, "clean": pair.clean,
                      "output": output, "cer_before": c_before / chars,
                      "cer_after": c_after / chars, "wer_before": w_before / words,
                      "wer_after": w_after / words})

    def rate(errors: str, length: str) -> float:
        return sums[errors] / sums[length] if sums[length] else float("nan")

    return {"n": len(items), "rejected": rejected,
            "cer_before": rate("c_before", "chars"), "cer_after": rate("c_after", "chars"),
            "wer_before": rate("w_before", "words"), "wer_after": rate("w_after", "words"),
            "items": items}
