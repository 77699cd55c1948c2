"""A journal of per-item results, so that a long evaluation killed halfway resumes where it
stopped instead of starting over.

One JSON line per finished item, appended and flushed as items finish; the first line is the
journal's key (the model, the task and every setting that changes an answer). A journal
whose key differs from the run's is another evaluation's: it is set aside under
`<name>.stale` and a new one begun, never mixed in. A line cut short by a kill (the last one)
is dropped on reading, so its item is simply done again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("fournil")


class Journal:
    """`done` maps an item id to its recorded result; `add` appends results."""

    def __init__(self, path: str | Path, key: dict) -> None:
        self.path = Path(path)
        self.key = json.loads(json.dumps(key, default=str))  # as it reads back
        self.done: dict[str, dict] = {}
        if self.path.exists():
            self._read()
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_lines([json.dumps({"journal": self.key}, ensure_ascii=False)])

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        try:
            header = json.loads(lines[0]).get("journal")
        except json.JSONDecodeError:
            header = None
        if header != self.key:
            stale = self.path.with_name(self.path.name + ".stale")
            os.replace(self.path, stale)
            log.info("%s: another evaluation's journal (moved to %s); starting afresh",
                     self.path, stale.name)
            return
        good = [lines[0]]
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number < len(lines):  # not the last line: the file is damaged, not cut
                    raise ValueError(f"{self.path}:{number}: not valid JSON") from None
                continue
            self.done[str(row["id"])] = row
            good.append(line)
        if len(good) < sum(1 for line in lines if line.strip()):  # drop a cut-off last line
            self._write_lines(good)

    def _write_lines(self, lines: list[str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, self.path)

    def add(self, rows: Iterable[dict]) -> None:
        lines = []
        for row in rows:
            self.done[str(row["id"])] = row
            lines.append(json.dumps(row, ensure_ascii=False))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
