"""The synthetic tasks. Each turns a planned `Item` into a `Draft` (programmatically, or from
an LLM reply to the request it makes) and verifies it:

    request(item, config) -> GenRequest | None    # None: no LLM call for this item
    draft(item, reply, config, generator_id) -> Draft   # raises Rejection
    verify(item, draft, config) -> {check: passed}  # ordered; the first failure is the reason
    generated_text(row) -> str                     # what the generator wrote, for diversity
"""

from __future__ import annotations

from typing import Protocol

from fournil.synth.config import SynthConfig
from fournil.synth.generator import GenRequest
from fournil.synth.sample import Draft, Item
from fournil.synth.tasks.ocr import OcrTask
from fournil.synth.tasks.qa import QaTask, SummaryTask
from fournil.synth.tasks.rag import RagTask


class Task(Protocol):
    name: str

    def request(self, item: Item, config: SynthConfig) -> GenRequest | None: ...

    def draft(self, item: Item, reply: str | None, config: SynthConfig,
              generator_id: str) -> Draft: ...

    def verify(self, item: Item, draft: Draft, config: SynthConfig) -> dict[str, bool]: ...

    def generated_text(self, row: dict) -> str: ...


TASKS: dict[str, Task] = {"ocr": OcrTask(), "rag": RagTask(), "qa": QaTask(),
                          "summary": SummaryTask()}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown synth task {name!r} ({', '.join(TASKS)})")
    return TASKS[name]
