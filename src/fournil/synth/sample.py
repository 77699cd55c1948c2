"""The synthetic sample: what a task plans (`Item`), what a generator drafts (`Draft`), and
the Parquet row every downstream stage reads (`SAMPLE_SCHEMA`).

A row: `id`, `task`, `messages` (the full chat; the last message is the assistant's target),
`seed_ids` / `seed_licenses` (the documents of every passage the sample shows, one
license per id; the passages themselves are in `meta.seed_passages`), `license` (derived),
`generator`, `verification` (JSON {check: bool}), `source` ("synth/<task>"), `split`,
`axes` (JSON of the constraint values), `meta` (JSON, the task's fields). Rejected rows add
`stage` and `reason`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa

from fournil.formats.chatml import render_chatml
from fournil.synth.seeds import Passage

MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
SAMPLE_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("messages", pa.list_(MESSAGE)),
    pa.field("seed_ids", pa.list_(pa.string())),
    pa.field("seed_licenses", pa.list_(pa.string())),
    pa.field("license", pa.string()),
    pa.field("generator", pa.string()),
    pa.field("verification", pa.string()),
    pa.field("source", pa.string()),
    pa.field("split", pa.string()),
    pa.field("axes", pa.string()),
    pa.field("meta", pa.string()),
])
REJECTED_SAMPLE_SCHEMA = SAMPLE_SCHEMA.append(pa.field("stage", pa.string())).append(
    pa.field("reason", pa.string()))
# what a unit of work writes: every sample it made, kept (reason null) or not, and its mode
CHUNK_SCHEMA = REJECTED_SAMPLE_SCHEMA.append(pa.field("mode", pa.string()))


@dataclass
class Item:
    """One planned sample: its seed passage, the other passages it may show, its axes."""

    id: str
    task: str
    mode: str  # "controlled" (axes) | "naive" (one fixed prompt, no axes)
    passage: Passage
    others: list[Passage]  # passages of other documents of the same split (distractors...)
    axes: dict[str, str]
    seed: int  # this sample's own random seed

    @property
    def split(self) -> str:
        return self.passage.split


@dataclass
class Draft:
    """A candidate sample: the chat (target last), the task's fields, the passages shown."""

    messages: list[dict]
    meta: dict
    seeds: list[Passage]
    generator: str = "programmatic"
    checks: dict[str, bool] = field(default_factory=dict)


class Rejection(Exception):
    """A draft that cannot be made (unparseable LLM output, a failed request): `reason`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def to_row(item: Item, draft: Draft, license: str, reason: str | None) -> dict:
    seeds = draft.seeds or [item.passage]
    documents = {p.doc_id: p.license for p in seeds}  # one entry per seed document, in order
    return {
        "id": item.id, "task": item.task, "messages": draft.messages,
        "seed_ids": list(documents), "seed_licenses": list(documents.values()),
        "license": license, "generator": draft.generator,
        "verification": json.dumps(draft.checks, ensure_ascii=False),
        "source": f"synth/{item.task}", "split": item.split,
        "axes": json.dumps(item.axes, ensure_ascii=False, sort_keys=True),
        "meta": json.dumps({"seed_passages": [p.id for p in seeds], **draft.meta},
                           ensure_ascii=False),
        "stage": "synth" if reason else None, "reason": reason, "mode": item.mode,
    }


def sample_to_text(sample: dict) -> str:
    """A sample as a pretraining document: its whole chat in ChatML, target included."""
    return render_chatml(sample["messages"], add_generation_prompt=False)
