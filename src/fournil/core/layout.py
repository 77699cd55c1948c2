"""Where each stage of a run writes: one folder per stage under the run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def ingest(self) -> Path:
        return self.root / "ingest"

    @property
    def curate(self) -> Path:
        return self.root / "curate"

    @property
    def synth(self) -> Path:
        return self.root / "synth"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def dpo(self) -> Path:
        return self.root / "dpo"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def export(self) -> Path:
        return self.root / "export"
