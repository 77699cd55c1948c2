"""Chat data for fine-tuning: reading, encoding with a loss mask, packing.

Reading. Chats come from `fournil synth` stage folders (`samples/*.parquet`, the synthetic
sample contract), or any JSONL / Parquet file (or folder of them) with a `messages` column of
`{role, content}`. A malformed row (bad JSON, no messages, a message without a string role
or content) does not stop the run: it becomes a `Rejected` with a reason and the file:row it
came from, and is counted.

Encoding. A chat is encoded exactly as `serve/chatml.py` encodes a prompt, turn by turn, so
the model is tuned on the token ids it will see when chatting: BOS, then per message
`<|im_start|>role\\ncontent<|im_end|>\\n`. An assistant turn is encoded as its header
(`<|im_start|>assistant\\n`, what a generation prompt ends with) followed by its content, so
the content's first tokens are the ones generation produces after that header. The loss
mask is 1 exactly on the assistant's content tokens and its closing `<|im_end|>` (the stop
token it must learn to emit), 0 on everything else: system and user turns, headers, the
newline after `<|im_end|>`.

Packing. Whole chats are laid one after another into rows of `seq_len + 1` tokens (next-fit,
in the given order; a chat is never split), the rest padded with `<|endoftext|>` under a 0
mask. Attention is plain causal over the row: a chat may attend to the chats packed before
it. That is the choice pretraining makes for documents, which the model learnt to read as
"a new document starts at <|endoftext|>", and every chat starts with that BOS; the
transformer's fused causal attention needs no mask tensor, which keeps SFT as fast per token
as pretraining. The loss mask keeps the earlier chats from being targets, and positions
(RoPE) are relative, so what a chat gains from its neighbours is context, not position.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fournil.formats.chat_template import Encoder
from fournil.formats.chatml import ROLES

IGNORE = -100  # the target id cross_entropy skips
CHAT_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


@dataclass
class Chat:
    id: str
    messages: list[dict]  # {role, content}; the last one is normally the assistant's target
    task: str | None = None
    split: str | None = None  # "train" | "eval" | None (unsplit data)
    license: str | None = None
    source: str | None = None  # its seed document's source (ids are `source/local-id`)
    where: str = ""  # file:row, for messages about it
    meta: dict = field(default_factory=dict)


@dataclass
class Rejected:
    id: str
    where: str
    reason: str  # machine-readable: read:bad_json, format:roles, length:too_long, …
    detail: str = ""


def chat_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files behind `paths`: a synth stage folder gives its `samples/`, another folder
    its JSONL/Parquet files (recursively), a file itself. Sorted within each path."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_dir():
            root = path / "samples" if (path / "samples").is_dir() else path
            found = sorted(p for p in root.rglob("*") if p.name.endswith(CHAT_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"{path}: no {', '.join(CHAT_SUFFIXES)} files in it")
            files += found
        elif path.name.endswith(CHAT_SUFFIXES):
            files.append(path)
        else:
            raise ValueError(f"{path}: not chat data (expected {', '.join(CHAT_SUFFIXES)})")
    return files


def iter_rows(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """(row number from 1, the row or None if unreadable, why it is unreadable)."""
    if path.name.endswith(".parquet"):
        try:
            table = pq.read_table(path)
        except Exception as e:  # a file that is not Parquet at all stops the run
            raise ValueError(f"{path}: not a readable Parquet file: {e}") from None
        for i, row in enumerate(table.to_pylist(), 1):
            yield i, row, ""
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield i, None, f"bad JSON: {e}"
                continue
            if not isinstance(row, dict):
                yield i, None, f"expected a JSON object, got {type(row).__name__}"
                continue
            yield i, row, ""


def parse_messages(value: object) -> tuple[list[dict] | None, str]:
    """A `messages` value as a list of {role, content} str dicts, else (None, why)."""
    if isinstance(value, str):  # a JSON string, as some exports store nested columns
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, "messages is a string but not JSON"
    if not isinstance(value, list) or not value:
        return None, "messages must be a non-empty list"
    messages = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            return None, f"message {j} is not {{role: str, content: str}}"
        messages.append({"role": m["role"], "content": m["content"]})
    return messages, ""


def _json_field(row: dict, name: str) -> dict:
    value = row.get(name)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return value if isinstance(value, dict) else {}


def readable_rows(paths: Sequence[str | Path], rejected: list[Rejected]
                  ) -> Iterator[tuple[str, dict]]:
    """("file:row", row) for every row of the files behind `paths`; the unreadable ones are
    appended to `rejected` instead."""
    for path in chat_files(paths):
        for i, row, error in iter_rows(path):
            where = f"{path}:{i}"
            if row is None:
                rejected.append(Rejected(where, where, "read:bad_json", error))
                continue
            yield where, row


def read_chats(paths: Sequence[str | Path]) -> tuple[list[Chat], list[Rejected]]:
    """Every row of the chat files behind `paths`: the chats, and the rows that are not."""
    chats, rejected = [], []
    for where, row in readable_rows(paths, rejected):
        chat_id = str(row.get("id") or where)
        messages, error = parse_messages(row.get("messages"))
        if messages is None:
            rejected.append(Rejected(chat_id, where, "read:bad_messages", error))
            continue
        seeds = row.get("seed_ids")
        # a source name may hold "/" (cligs-textbox/nouvelles19), the local id does not
        source = seeds[0].rsplit("/", 1)[0] if isinstance(seeds, list) and seeds else None
        chats.append(Chat(chat_id, messages, task=row.get("task"), split=row.get("split"),
                          license=row.get("license"), source=source, where=where,
                          meta=_json_field(row, "meta")))
    return chats, rejected


def held_out(chats: Sequence[Chat], eval_fraction: float, seed: int) -> list[bool]:
    """Which chats (or anything with a `split`) are held out for evaluation. Chats marked
    split == "eval" are (synth decides it per seed document, so no eval chat shares a seed
    with a train chat); when none is marked, a seeded `eval_fraction` of the chats is."""
    if any(c.split == "eval" for c in chats):
        return [c.split == "eval" for c in chats]
    n_eval = round(eval_fraction * len(chats))
    held = set(np.random.default_rng(seed).permutation(len(chats))[:n_eval].tolist())
    return [i in held for i in range(len(chats))]


def scored_subset(held: Sequence, limit: int, seed: int) -> list:
    """At most `limit` of the held-out items (0: all), a seeded choice in their own order:
    what the held-out loss is computed on. The rest stay held out (never trained on); a 135M
    model scores a few hundred chats in minutes on a CPU, at every evaluation."""
    if not limit or len(held) <= limit:
        return list(held)
    chosen = sorted(np.random.default_rng(seed).permutation(len(held))[:limit].tolist())
    return [held[i] for i in chosen]


# -- encoding ---------------------------------------------------------------------------------

def encode_chat(encoder: Encoder, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """(ids, mask): the chat's token ids, and 1 on the tokens the model learns to produce (each
    assistant turn and its end-of-turn marker), 0 elsewhere, in the model's chat format."""
    return encoder.encode_with_mask(messages)


def encode_response(encoder: Encoder, prompt: Sequence[dict], response: str
                    ) -> tuple[list[int], list[int]]:
    """A prompt (messages up to the answer) and one assistant answer, as (ids, mask): what
    DPO scores. The mask covers the answer and its `<|im_end|>`."""
    return encode_chat(encoder, [*prompt, {"role": "assistant", "content": response}])


# -- packing ----------------------------------------------------------------------------------

@dataclass
class Packed:
    """Rows of `seq_len + 1` tokens: `ids` [rows, seq_len + 1] and the matching `mask`."""

    ids: np.ndarray
    mask: np.ndarray
    chats_per_row: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def pack(encoded: Sequence[tuple[list[int], list[int]]], seq_len: int, pad_id: int) -> Packed:
    """Whole chats, in order, into rows of seq_len + 1 tokens (next-fit). A chat longer than a
    row is an error here: selection rejects them first (`length:too_long`)."""
    width = seq_len + 1
    members: list[list[int]] = []
    used = width  # forces a new row for the first chat
    for k, (ids, _) in enumerate(encoded):
        if len(ids) > width:
            raise ValueError(f"chat {k} has {len(ids)} tokens, more than a row ({width})")
        if used + len(ids) > width:
            members.append([])
            used = 0
        members[-1].append(k)
        used += len(ids)
    ids_out = np.full((len(members), width), pad_id, dtype=np.int64)
    mask_out = np.zeros((len(members), width), dtype=np.int8)
    for r, chat_ids in enumerate(members):
        at = 0
        for k in chat_ids:
            ids, mask = encoded[k]
            ids_out[r, at:at + len(ids)] = ids
            mask_out[r, at:at + len(mask)] = mask
            at += len(ids)
    return Packed(ids_out, mask_out, [len(m) for m in members])


def inputs_and_targets(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Next-token pairs of packed rows: inputs ids[:, :-1], targets ids[:, 1:] with IGNORE
    where the target is not an assistant token."""
    targets = np.where(mask[:, 1:] == 1, ids[:, 1:], IGNORE)
    return ids[:, :-1], targets


def check_roles(messages: Sequence[dict]) -> str:
    """'' when the chat is well formed: known roles, an optional leading system message, then
    user and assistant alternating, ending with the assistant, no empty message; else the
    reason (format:…)."""
    roles = [m["role"] for m in messages]
    if any(r not in ROLES for r in roles):
        return "format:unknown_role"
    if any(not m["content"].strip() for m in messages):
        return "format:empty_message"
    turns = roles[1:] if roles[0] == "system" else roles
    if not turns or turns[-1] != "assistant":
        return "format:last_not_assistant"
    if any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(turns)):
        return "format:roles_do_not_alternate"
    return ""
