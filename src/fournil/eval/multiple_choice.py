"""Multiple-choice tasks scored by log-likelihood (HellaSwag, ARC, and any JSONL in their shape).

Each item is a context and its choices; the model "answers" the choice whose continuation
it finds most likely. As in lm-evaluation-harness, the continuation is the delimiter (a
space) plus the choice, and three accuracies are reported:

- `acc`: the highest summed log-probability wins (favours short choices);
- `acc_norm`: log-probability divided by the choice's length in characters, the harness's
  `acc_norm`;
- `acc_bytes`: divided by the choice's length in UTF-8 bytes, the harness's `acc_bytes`
  (the tokenizer-independent one; it differs from `acc_norm` on accented text).

One JSON object a line: `{"query" or "context": str, "choices": [str, ...], "gold" or
"label": int}` and optionally `"id"`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fournil.eval.lm import LanguageModel


@dataclass(frozen=True)
class Item:
    id: str
    context: str
    choices: list[str]
    gold: int


def _parse(obj: object, where: str, index: int) -> Item:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    context = obj.get("query", obj.get("context"))
    if not isinstance(context, str):
        raise ValueError(f"{where}: 'query' (or 'context') must be a string, got {context!r}")
    choices = obj.get("choices")
    if (not isinstance(choices, list) or len(choices) < 2
            or not all(isinstance(c, str) and c for c in choices)):
        raise ValueError(f"{where}: 'choices' must be a list of two or more non-empty "
                         f"strings, got {choices!r}")
    gold = obj.get("gold", obj.get("label"))
    if isinstance(gold, str) and gold.isdigit():  # HellaSwag's labels are strings
        gold = int(gold)
    if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
        raise ValueError(f"{where}: 'gold' (or 'label') must be an index into the "
                         f"{len(choices)} choices, got {gold!r}")
    return Item(str(obj.get("id", index)), context, choices, gold)


def read_items(path: str | Path) -> list[Item]:
    """The items of a JSONL file; a malformed line is an error naming the file and line."""
    path = Path(path)
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
            items.append(_parse(obj, f"{path}:{n}", len(items)))
    if not items:
        raise ValueError(f"{path}: no items")
    return items


def argmax_normalised(logprobs: Sequence[float], lengths: Sequence[float]) -> int:
    """The index of the best log-probability per unit of length (the first one on ties)."""
    scores = [lp / length for lp, length in zip(logprobs, lengths, strict=True)]
    return max(range(len(scores)), key=scores.__getitem__)


def score_multiple_choice(lm: LanguageModel, items: Sequence[Item], delimiter: str = " ",
                          batch_tokens: int = 4096) -> dict:
    """{"n", "acc", "acc_norm", "acc_bytes", "items": [per item: predictions, log-probs]}."""
    requests = [(item.context, delimiter + choice) for item in items for choice in item.choices]
    scores = iter(lm.loglikelihood(requests, batch_tokens))
    rows = []
    for item in items:
        logprobs = [next(scores).logprob for _ in item.choices]
        ones = [1.0] * len(logprobs)
        pred = {
            "acc": argmax_normalised(logprobs, ones),
            "acc_norm": argmax_normalised(logprobs, [len(c) for c in item.choices]),
            "acc_bytes": argmax_normalised(logprobs, [len(c.encode()) for c in item.choices]),
        }
        rows.append({"id": item.id, "gold": item.gold, "logprobs": logprobs,
                     **{f"pred_{k}": v for k, v in pred.items()},
                     **{k: float(v == item.gold) for k, v in pred.items()}})
    n = len(rows)
    return {"n": n, **{k: sum(r[k] for r in rows) / n if n else float("nan")
                       for k in ("acc", "acc_norm", "acc_bytes")}, "items": rows}
