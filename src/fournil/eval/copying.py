"""In-context copying: does the model predict a passage it has just read?

Each item is a run of words from a held-out document, shuffled (so that grammar predicts
little of it), then read a second time. A model that copies from its context (through
"induction heads", Olsson et al. 2022) predicts the second reading almost exactly; a model
that cannot copy scores it about like the first. OCR correction and verbatim quoting are
mostly copying, so this is the first thing to look at when a model fails them: a small
model learns to copy only after many more tokens than it needs for fluent text.

Scores, in nats per token and top-1 accuracy, over the tokens of each reading after its
first one: `loss_first`, `loss_second`, `copy_gain` (first minus second), `accuracy_first`,
`accuracy_second`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from fournil.eval.lm import LanguageModel

MIN_WORDS = 8


def copy_passages(documents: Sequence[dict], n_items: int, words: int = 40,
                  seed: int = 0) -> list[str]:
    """`n_items` passages of `words` words (all the documents hold, when that is fewer): item
    i is a window of the documents' words (their "text", one after the other) at a random
    place, shuffled; reproducible from `seed`."""
    pool = [word for d in documents for word in d["text"].split()]
    if len(pool) < MIN_WORDS:
        raise ValueError(f"copying: the documents hold {len(pool)} words, fewer than the "
                         f"{MIN_WORDS} an item needs")
    words = min(words, len(pool))
    passages = []
    for i in range(n_items):
        rng = random.Random(seed * 1_000_003 + i)
        start = rng.randrange(len(pool) - words + 1)
        window = pool[start:start + words]
        rng.shuffle(window)
        passages.append(" ".join(window))
    return passages


def evaluate_copying(lm: LanguageModel, passages: Sequence[str],
                     batch_tokens: int = 4096) -> dict:
    """Each passage's tokens read twice in one sequence (BOS, passage, passage): the loss and
    accuracy on each reading, averaged over tokens (see the module docstring)."""
    offset = 1 if lm.bos is not None else 0
    sequences, lengths = [], []
    for passage in passages:
        ids = lm.encode(" " + passage)[:lm.max_len // 2 - 1]
        if len(ids) < 2:
            raise ValueError(f"copying passage {passage[:40]!r}: under 2 tokens")
        sequences.append(lm.with_bos(ids + ids))
        lengths.append(len(ids))
    scored = lm.token_logprobs(sequences, batch_tokens)
    sums = {"loss_first": 0.0, "loss_second": 0.0, "accuracy_first": 0.0,
            "accuracy_second": 0.0}
    count, items = 0, []
    for passage, n, (logprobs, greedy) in zip(passages, lengths, scored, strict=True):
        # logprobs[j] scores token j + 1: the first reading is tokens offset..offset+n-1
        first = slice(offset, offset + n - 1)  # its tokens after the first
        second = slice(offset + n, offset + 2 * n - 1)
        item = {"passage": passage, "tokens": n,
                "loss_first": -float(logprobs[first].mean()),
                "loss_second": -float(logprobs[second].mean()),
                "accuracy_first": float(greedy[first].float().mean()),
                "accuracy_second": float(greedy[second].float().mean())}
        items.append(item)
        for key in sums:
            sums[key] += item[key] * (n - 1)
        count += n - 1
    scores = {key: value / count for key, value in sums.items()}
    scores["copy_gain"] = scores["loss_first"] - scores["loss_second"]
    return {**scores, "n": len(items), "items": items}
