"""How a model corrects a piece of OCR: the prompt (zero- or few-shot), the decoding (greedy,
or copy-biased so that what is right stays as it is), and the confidence rule that keeps the
input where the correction is not to be trusted. `fournil eval`'s OCR task and `fournil
correct` both go through here, so a setting measured on one is the setting used on the other.

The confidence rules. A correction that changes more than `max_change` of its input's
characters (edit distance over the input's length) is a rewrite, not a correction, and the
input is kept. Real OCR of printed books is a few percent wrong (ICDAR 2017's French
evaluation: 1.5-2.3% CER), so a correction that changes a third of its input is far more
likely to be a model's wandering than a fix. Within a piece, the word rule (`word_edit`)
keeps each change that is as small as OCR's errors are (a letter or two misread in a word:
rn/m, e/c, l/1, a dropped accent) and puts the input back where a stretch of words was
rewritten by more characters than that: a small model facing a badly garbled word guesses a
plausible word, and its guess is more often wrong than right.

Defaults (`DEFAULT`) were chosen on synthetic held-out pairs (`fournil synth`'s OCR task),
never on an evaluation set: docs/evaluation.md, "Correcting OCR", has the sweep.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from fournil.eval.lm import LanguageModel
from fournil.formats.prompts import ocr_messages
from fournil.model.copy_decoding import CopyBias


@dataclass(frozen=True)
class Correction:
    """The settings of a correction. `margin` None: plain greedy decoding."""

    shots: int = 0  # synthetic (noisy, clean) examples in the prompt
    margin: float | None = None  # copy bias, in nats (fournil.model.copy_decoding)
    span: int = 0  # the most words a departure from the input may rewrite (0: no limit)
    max_change: float | None = None  # the confidence rule (share of the input's characters)
    word_edit: int | None = None  # the word rule: most characters one changed stretch may change

    def __post_init__(self) -> None:
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0, got {self.shots}")
        if self.margin is not None:
            CopyBias(self.margin, self.span)  # checks them
        elif self.span:
            raise ValueError("span limits a copy-biased departure: give a margin too")
        if self.max_change is not None and not self.max_change > 0:
            raise ValueError(f"max_change must be > 0, got {self.max_change}")
        if self.word_edit is not None and self.word_edit < 1:
            raise ValueError(f"word_edit must be >= 1, got {self.word_edit}")

    @property
    def bias(self) -> CopyBias | None:
        return None if self.margin is None else CopyBias(self.margin, self.span)

    def decoding_key(self) -> dict:
        """What changes the model's raw answer (the confidence rules do not: they are applied
        after, so answers recorded without them are scored with them at no cost)."""
        margin = None if self.margin is None else (
            "inf" if math.isinf(self.margin) else self.margin)
        return {"shots": self.shots, "margin": margin, "span": self.span}


# The copy-biased setting `fournil correct` uses and `?copy` names (docs/evaluation.md)
DEFAULT = Correction(margin=4.0, span=1, max_change=0.25)


def change(output: str, source: str) -> float:
    """The share of `source`'s characters an output changes (edit distance / length)."""
    return Levenshtein.distance(output, source) / max(1, len(source))


_WORDS_AND_SPACES = re.compile(r"\S+|\s+")


def small_changes_only(output: str, source: str, word_edit: int) -> str:
    """`output` where it differs from `source` by at most `word_edit` characters in each
    changed stretch of words (aligned word by word), `source` in the stretches changed more."""
    old, new = _WORDS_AND_SPACES.findall(source), _WORDS_AND_SPACES.findall(output)
    kept = []
    for tag, i1, i2, j1, j2 in Levenshtein.opcodes(old, new):
        before, after = "".join(old[i1:i2]), "".join(new[j1:j2])
        small = tag == "equal" or Levenshtein.distance(before, after) <= word_edit
        kept.append(after if small else before)
    return "".join(kept)


def guarded(output: str, source: str, max_change: float | None,
            word_edit: int | None = None) -> str:
    """`output`, or `source` where the output changes more than `max_change` of it; then,
    with `word_edit`, the input again in every stretch of words changed by more than that."""
    if max_change is not None and change(output, source) > max_change:
        return source
    return output if word_edit is None else small_changes_only(output, source, word_edit)


class Corrector:
    """A model correcting pieces with one `Correction` and its few-shot `examples`."""

    def __init__(self, lm: LanguageModel, correction: Correction = Correction(),
                 examples: Sequence[tuple[str, str]] = (), max_new_tokens: int = 512) -> None:
        if len(examples) < correction.shots:
            raise ValueError(f"{correction.shots} shots asked for, {len(examples)} examples "
                             "given")
        self.lm, self.correction, self.max_new_tokens = lm, correction, max_new_tokens
        self.examples = list(examples[:correction.shots])

    def messages(self, noisy: str) -> list[dict]:
        return ocr_messages(noisy, self.examples)

    def budget(self, noisy: str) -> int:
        """A correction is about as long as its input: generation stops at twice the input's
        tokens (plus a margin) if the model does not end its turn first."""
        return min(self.max_new_tokens, 2 * len(self.lm.encode(noisy)) + 16)

    def fits(self, noisy: str) -> bool:
        """Whether the prompt leaves room to answer in the model's context."""
        return len(self.lm.chat_ids(self.messages(noisy))) < self.lm.max_len

    def raw(self, pieces: Sequence[str]) -> list[str]:
        """The model's answers, before the confidence rule. Raises PromptTooLong if a
        piece's prompt fills the context (check `fits` first)."""
        if not pieces:
            return []
        chats = [self.messages(p) for p in pieces]
        budgets = [self.budget(p) for p in pieces]
        return self.lm.answer_batch(chats, budgets, list(pieces), self.correction.bias)

    def guard(self, raw: str, source: str) -> str:
        return guarded(raw, source, self.correction.max_change, self.correction.word_edit)

    def correct(self, pieces: Sequence[str]) -> list[str]:
        return [self.guard(r, p) for r, p in zip(self.raw(pieces), pieces, strict=True)]
