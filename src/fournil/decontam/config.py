"""The decontam stage's settings (`[decontam]`). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field

from fournil.core.validation import check as _check

ON_OVERLAP = ("fail", "report")


@dataclass
class DecontamConfig:
    # evaluation files or folders (.txt, .md, .jsonl, .json; folders are read recursively)
    # whose text must not be in the training text; relative to the recipe
    against: list[str] = field(default_factory=list)
    # words per window: GPT-3's decontamination used 13 (Brown et al. 2020, appendix C), long
    # enough that sayings and boilerplate rarely match by chance
    ngram: int = 13
    # fail: the bake stops before anything trains on the overlap; report: it is listed only
    on_overlap: str = "fail"

    def validate(self, key: str) -> None:
        _check(isinstance(self.against, list) and all(isinstance(p, str) for p in self.against),
               f"{key}.against", "must be a list of paths")
        _check(5 <= self.ngram <= 64, f"{key}.ngram", f"must be between 5 and 64, got "
               f"{self.ngram}")
        _check(self.on_overlap in ON_OVERLAP, f"{key}.on_overlap",
               f"must be one of {', '.join(ON_OVERLAP)}, got {self.on_overlap!r}")
