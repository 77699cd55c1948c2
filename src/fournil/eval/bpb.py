"""Bits-per-byte on held-out text, overall, per source and per language.

Loss per token depends on the tokenizer; bits per UTF-8 byte does not, so models with
different vocabularies compare fairly. Two ways to count, for two uses:

- `bits_per_byte` scores our own token shards (the eval stage, the pretrain loop): windows
  of `seq_len` tokens cut through the concatenated held-out documents, special tokens
  (document boundaries) left out of both sums, as in nanochat. Only a model that uses the
  shards' tokenizer can be scored this way.
- `document_bits_per_byte` scores the held-out documents' text with any model's own
  tokenizer (`fournil.eval.lm`): each document from its start, every token predicted once,
  divided by the document's UTF-8 bytes. This is what `fournil eval --model A --model B`
  compares, so a fournil checkpoint and any Hugging Face model are measured alike.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from fournil.core.shards import iter_batches
from fournil.eval.lm import LanguageModel
from fournil.tokens.shards import TokenDataset

UNKNOWN_LANGUAGE = "und"  # ISO 639-2 "undetermined"


class HeldOut:
    """Validation tokens grouped by source (or by `group_of[document id]`, e.g. languages),
    each group capped at `max_tokens_per_source`."""

    def __init__(self, val_dir, max_tokens_per_source: int,
                 group_of: Mapping[str, str] | None = None):
        data = TokenDataset(val_dir)
        index = data.documents().to_pylist()
        spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for row in index:
            group = row["source"] if group_of is None else group_of.get(row["id"],
                                                                        UNKNOWN_LANGUAGE)
            spans[group].append((row["start"], row["n_tokens"]))
        self.tokens: dict[str, np.ndarray] = {}
        for source, doc_spans in sorted(spans.items()):
            parts, total = [], 0
            for start, n in doc_spans:
                take = min(n, max_tokens_per_source + 1 - total)
                parts.append(data.read(start, take))
                total += take
                if total > max_tokens_per_source:
                    break
            self.tokens[source] = np.concatenate(parts)


class Score(TypedDict):
    bpb: float  # nats / (ln 2 * bytes): comparable across tokenizers
    loss: float  # nats per scored token
    nats: float
    bytes: int
    tokens: int


class Bpb(Score):
    by_source: dict[str, Score]


@torch.inference_mode()
def bits_per_byte(model: torch.nn.Module, held_out: HeldOut, token_bytes: np.ndarray,
                  seq_len: int, batch_size: int = 8, device: str | torch.device = "cpu",
                  autocast: torch.autocast | None = None) -> Bpb:
    """The held-out set's score, overall and by source."""
    was_training = model.training
    model.eval()
    byte_table = torch.from_numpy(token_bytes.astype(np.int64)).to(device)
    by_source = {}
    for source, tokens in held_out.tokens.items():
        n_windows = (len(tokens) - 1) // seq_len
        if n_windows == 0:
            continue
        nats, n_bytes, n_tokens = 0.0, 0, 0
        rows = torch.from_numpy(tokens[: n_windows * seq_len + 1])
        for first in range(0, n_windows, batch_size):
            idx = range(first, min(first + batch_size, n_windows))
            chunk = torch.stack([rows[i * seq_len: (i + 1) * seq_len + 1] for i in idx]).to(device)
            x, y = chunk[:, :-1], chunk[:, 1:]
            with autocast or nullcontext():
                logits = model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
            weight = byte_table[y.flatten()]
            counted = weight > 0
            nats += loss[counted].sum().item()
            n_bytes += weight.sum().item()
            n_tokens += int(counted.sum().item())
        by_source[source] = _summary(nats, n_bytes, n_tokens)
    model.train(was_training)
    total = _summary(sum(s["nats"] for s in by_source.values()),
                     sum(s["bytes"] for s in by_source.values()),
                     sum(s["tokens"] for s in by_source.values()))
    return {**total, "by_source": by_source}


def _summary(nats: float, n_bytes: int, n_tokens: int) -> Score:
    return {
        "bpb": nats / (math.log(2) * n_bytes) if n_bytes else float("nan"),
        "loss": nats / n_tokens if n_tokens else float("nan"),
        "nats": nats, "bytes": int(n_bytes), "tokens": n_tokens,
    }


def document_languages(curate_dir: str | Path) -> dict[str, str]:
    """Document id -> language: the curate stage's detected `lang`, else the language its
    source declared, else "und"."""
    languages = {}
    for batch in iter_batches(Path(curate_dir) / "documents", columns=["id", "lang", "language"]):
        for row in batch.to_pylist():
            languages[row["id"]] = row["lang"] or row["language"] or UNKNOWN_LANGUAGE
    return languages


def held_out_documents(tokens_dir: str | Path, curate_dir: str | Path,
                       max_bytes_per_source: int) -> list[dict]:
    """The held-out documents of a run ({"id", "source", "language", "text"}), in the
    validation index's order, each source capped at `max_bytes_per_source` UTF-8 bytes (the
    last document cut to fit). The ids come from the token shards' validation index, the
    text and language from the curated documents the shards were made from."""
    index = TokenDataset(Path(tokens_dir) / "val").documents().to_pylist()
    wanted = {row["id"]: row["source"] for row in index}
    found = {}
    for batch in iter_batches(Path(curate_dir) / "documents",
                              columns=["id", "text", "lang", "language"]):
        for row in batch.to_pylist():
            if row["id"] in wanted:
                found[row["id"]] = row
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ValueError(f"{curate_dir}: {len(missing)} held-out documents of {tokens_dir} are "
                         f"not among the curated documents (e.g. {missing[0]!r}): the tokens "
                         "were not made from this curate stage")
    taken: dict[str, int] = defaultdict(int)
    documents = []
    for doc_id, source in wanted.items():
        room = max_bytes_per_source - taken[source]
        if room <= 0:
            continue
        row = found[doc_id]
        text = row["text"].encode()[:room].decode(errors="ignore")  # whole characters only
        taken[source] += len(text.encode())
        documents.append({"id": doc_id, "source": source, "text": text,
                          "language": row["lang"] or row["language"] or UNKNOWN_LANGUAGE})
    return documents


def document_bits_per_byte(lm: LanguageModel, documents: Sequence[dict], seq_len: int,
                           batch_tokens: int = 4096) -> dict:
    """{"bpb", "nats", "bytes", "tokens", "by_source", "by_language"} of `lm` on documents
    ({"text", "source", "language"}). Each document is read from a start token (the BOS, or
    end-of-text for models without one) in windows of `seq_len` tokens (at most the model's
    context) that overlap by one, so each of its tokens is predicted exactly once."""
    seq_len = min(seq_len, lm.max_len)
    windows, owner = [], []
    for i, doc in enumerate(documents):
        ids = [lm.prefix_id, *lm.encode(doc["text"])]
        for start in range(0, len(ids) - 1, seq_len):
            windows.append(ids[start:start + seq_len + 1])
            owner.append(i)
    nats = [0.0] * len(documents)
    tokens = [0] * len(documents)
    for i, (logprobs, _) in zip(owner, lm.token_logprobs(windows, batch_tokens), strict=True):
        nats[i] -= float(logprobs.double().sum())
        tokens[i] += len(logprobs)
    groups: dict[str, dict[str, list[float]]] = {"by_source": defaultdict(lambda: [0, 0, 0]),
                                                 "by_language": defaultdict(lambda: [0, 0, 0])}
    for i, doc in enumerate(documents):
        for key, name in (("by_source", doc["source"]), ("by_language", doc["language"])):
            total = groups[key][name]
            total[0] += nats[i]
            total[1] += len(doc["text"].encode())
            total[2] += tokens[i]
    overall = _summary(sum(nats), sum(len(d["text"].encode()) for d in documents), sum(tokens))
    return {**overall, **{key: {name: _summary(*t) for name, t in sorted(g.items())}
                          for key, g in groups.items()}}
