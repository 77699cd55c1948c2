"""The eval settings (`[eval]`): the tasks `fournil eval --task` and the report stage score, and
how much of each. Standard library only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fournil.core.validation import check as _check

EVAL_TASK_KINDS = ("bpb", "mc", "ocr", "rag", "copy", "ask")  # fournil.eval.tasks


@dataclass
class EvalConfig:
    """`fournil eval --task/--report`: what to score (see fournil.eval.tasks) and how much."""

    # bpb, mc:PATH, ocr[:PATH], rag[:PATH], copy[:PATH], ask[:PATH]
    tasks: list[str] = field(default_factory=list)
    max_items: int = 200  # per task, the first ones in file order
    max_new_tokens: int = 256  # longest answer (OCR corrections, cited answers)
    bpb_bytes_per_source: int = 100_000  # held-out text scored per source

    def validate(self, key: str) -> None:
        for i, task in enumerate(self.tasks):
            _check(re.split("[:?]", task)[0] in EVAL_TASK_KINDS, f"{key}.tasks[{i}]",
                   f"expected bpb, mc:PATH, ocr[:PATH], rag[:PATH], copy[:PATH] or "
                   f"ask[:PATH], got {task!r}")
        for name in ("max_items", "max_new_tokens", "bpb_bytes_per_source"):
            _check(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
