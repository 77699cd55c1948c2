"""OCR correction: character and word error rates of noisy text before correction and of the
model's correction after, against the clean text.

The model gets `fournil.formats.prompts.ocr_messages(noisy)` (the chat synth and SFT use;
few-shot, synthetic examples first) and answers as `fournil.eval.corrector` says (greedy, or
copy-biased, then the confidence rule). Rates are corpus-level, as in the ICDAR post-OCR
competitions: the edit distances of all items summed, divided by the summed length of the
references, so a long page weighs more than a short line. Edit distances are rapidfuzz's
Levenshtein (insertion, deletion, substitution: 1 each), over characters for CER and over
words for WER.

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
small model's context. A piece's subset is its file's folder (ICDAR: fr_monograph,
fr_periodical): rates are given for each subset and overall, with the share of pieces the
correction made worse (more character errors than the input had) and better.

A full pass is long (2,800 ICDAR pieces), so answers go to a `Journal` as they come: a pass
killed halfway and started again answers only the pieces it had not.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz.distance import Levenshtein
from tqdm import tqdm

from fournil.eval.corrector import DEFAULT, Correction, Corrector
from fournil.eval.journal import Journal

log = logging.getLogger("fournil")

_SPACES = re.compile(r"\s+")
PREFIXES = ("[OCR_toInput] ", "[OCR_aligned] ", "[ GS_aligned] ")
GAP, NO_GOLD = "@", "#"


@dataclass(frozen=True)
class Pair:
    id: str
    noisy: str
    clean: str
    subset: str = ""  # ICDAR: the file's folder (fr_monograph, fr_periodical)


# task options (`ocr:PATH?shots=3&copy`, see fournil.eval.tasks)
OPTIONS = ("copy", "margin", "span", "max_change", "word_edit", "shots", "shots_from", "every")


def correction_from_options(options: dict[str, str]) -> Correction:
    """The `Correction` a task's options name: `copy` takes the copy-biased defaults
    (`fournil.eval.corrector.DEFAULT`: margin, span, max_change and word_edit), which
    `margin`, `span`, `max_change` and `word_edit` override one by one (`margin=inf` copies
    the input; `max_change=none` and `word_edit=none` turn the rules off); `shots=K` puts K
    synthetic examples in the prompt."""
    base = DEFAULT if "copy" in options else Correction()
    fields = {"shots": base.shots, "margin": base.margin, "span": base.span,
              "max_change": base.max_change, "word_edit": base.word_edit}
    for key, cast in (("shots", int), ("span", int), ("margin", float), ("max_change", float),
                      ("word_edit", int)):
        if key in options:
            value = options[key]
            try:
                fields[key] = None if value == "none" and key in ("max_change", "word_edit") \
                    else cast(value)
            except ValueError:
                raise ValueError(f"option {key}={value!r}: expected {cast.__name__}") from None
    return Correction(**fields)


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
    Ids are `<file, relative to the folder, without .txt>:<piece>`; a piece's subset is its
    file's folder (relative to the folder given; a single file: the folder it is in)."""
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
        relative = file.relative_to(path) if path.is_dir() else Path(file.name)
        name = relative.with_suffix("").as_posix()
        subset = relative.parent.as_posix() if path.is_dir() else file.parent.name
        for k, (o, g) in enumerate(_aligned_pieces(ocr, gold, max_chars)):
            noisy, clean = normalize(o.replace(GAP, "")), normalize(g.replace(GAP, ""))
            if clean:
                pairs.append(Pair(f"{name}:{k}", noisy, clean, "" if subset == "." else subset))
    return pairs


def every_nth_piece(pairs: Sequence[Pair], n: int) -> list[Pair]:
    """Piece 0, n, 2n, ... of each file (ids `<file>:<piece>`): every file is still seen."""
    if n < 1:
        raise ValueError(f"every={n}: expected a whole number >= 1")
    return [p for p in pairs if int(p.id.rsplit(":", 1)[1]) % n == 0]


def summarize(items: Sequence[dict]) -> dict:
    """Corpus-level rates over scored items, and the shares of items made worse / better /
    left as they were (by character errors against the input's)."""
    n = len(items)
    sums = defaultdict(int)
    for item in items:
        for key in ("c_before", "c_after", "chars", "w_before", "w_after", "words"):
            sums[key] += item[key]
        sums["worse"] += item["c_after"] > item["c_before"]
        sums["better"] += item["c_after"] < item["c_before"]

    def rate(errors: str, length: str) -> float:
        return sums[errors] / sums[length] if sums[length] else float("nan")

    return {"n": n, "cer_before": rate("c_before", "chars"), "cer_after": rate("c_after", "chars"),
            "wer_before": rate("w_before", "words"), "wer_after": rate("w_after", "words"),
            "worse": sums["worse"] / n if n else float("nan"),
            "better": sums["better"] / n if n else float("nan"),
            "kept_input": sum(i["kept_input"] for i in items) / n if n else float("nan")}


def score_pair(pair: Pair, raw: str, output: str) -> dict:
    """One item: its texts, its error counts before and after, and its rates."""
    c_before, chars = char_errors(pair.noisy, pair.clean)
    c_after, _ = char_errors(output, pair.clean)
    w_before, words = word_errors(pair.noisy, pair.clean)
    w_after, _ = word_errors(output, pair.clean)
    return {"id": pair.id, "subset": pair.subset, "noisy": pair.noisy, "clean": pair.clean,
            "output": output, "raw": raw, "kept_input": output != raw,
            "c_before": c_before, "c_after": c_after, "chars": chars,
            "w_before": w_before, "w_after": w_after, "words": words,
            "cer_before": c_before / chars, "cer_after": c_after / chars,
            "wer_before": w_before / words, "wer_after": w_after / words}


def evaluate_ocr(corrector: Corrector, pairs: Sequence[Pair], journal: Journal | None = None,
                 batch_size: int = 16) -> dict:
    """{"n", "rejected", "cer_before", "cer_after", "wer_before", "wer_after", "worse",
    "better", "kept_input", "by_subset" (the same per subset, when pairs have one),
    "generation_seconds", "items"}.

    Pieces are answered in batches of similar length (a batch waits for its longest);
    each batch's answers go to the `journal` (if given) before the next batch starts, and
    pieces already in it are not answered again. "generation_seconds" adds up the time
    spent answering, over every run that filled the journal. Items whose prompt does not
    fit the context are rejected with a reason, and the rates are over the others.
    """
    rejected, todo = [], []
    for pair in pairs:
        if not normalize(pair.clean):
            rejected.append({"id": pair.id, "reason": "ocr:empty_reference"})
        elif not corrector.fits(pair.noisy):
            rejected.append({"id": pair.id, "reason": "ocr:prompt_too_long"})
        else:
            todo.append(pair)
    done = dict(journal.done) if journal is not None else {}
    pending = sorted((p for p in todo if p.id not in done), key=lambda p: len(p.noisy))
    if done:
        log.info("ocr: %d of %d pieces answered by an earlier run (%s), %d to go",
                 len(todo) - len(pending), len(todo), journal.path, len(pending))
    with tqdm(total=len(todo), initial=len(todo) - len(pending), desc="ocr", unit="piece",
              mininterval=5.0) as bar:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            started = time.perf_counter()
            answers = corrector.raw([p.noisy for p in batch])
            each = (time.perf_counter() - started) / len(batch)
            rows = [{"id": p.id, "raw": a, "seconds": round(each, 3)}
                    for p, a in zip(batch, answers, strict=True)]
            done.update((r["id"], r) for r in rows)
            if journal is not None:
                journal.add(rows)
            bar.update(len(batch))
    items = [score_pair(p, done[p.id]["raw"], corrector.guard(done[p.id]["raw"], p.noisy))
             for p in todo]
    result = {**summarize(items), "rejected": rejected,
              "generation_seconds": round(sum(done[p.id]["seconds"] for p in todo), 1)}
    subsets = sorted({i["subset"] for i in items})
    if subsets != [""]:
        result["by_subset"] = {s: summarize([i for i in items if i["subset"] == s])
                               for s in subsets}
    result["items"] = items
    return result
