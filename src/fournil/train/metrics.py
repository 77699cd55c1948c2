"""metrics.jsonl: one JSON row per logged step, evaluation or checkpoint of a training stage."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """metrics.jsonl; on resume, lines past the resumed step are dropped (they will recur)."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, **row: object) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
