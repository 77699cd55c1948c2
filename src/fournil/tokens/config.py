"""The tokens stage's settings (`[tokens]`: the held-out split, synthetic samples in the
shards) and the data mixture that pretraining reads them with (`[pretrain.mixture]`: sources
weighted per phase, see mixture.py). Standard library only, so loading a recipe stays light.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from fournil.core.validation import check


@dataclass
class TokensConfig:
    val_fraction: float = 0.05  # share of passages held out for validation
    passage_chars: int = 4000  # documents are split into passages for the val split
    # also pack the synth stage's train-split samples (ChatML text, sources `synth/<task>`),
    # e.g. for a mixture phase that mixes instruction data into pretraining; their eval split
    # stays out of every token shard
    synth: bool = False

    def validate(self, key: str) -> None:
        check(0.0 < self.val_fraction < 0.5, f"{key}.val_fraction", "must be in (0, 0.5)")
        check(self.passage_chars >= 200, f"{key}.passage_chars", "must be >= 200")


KEY = "pretrain.mixture"  # where the recipe nests the mixture, for errors found at run time
MAX_CYCLE = 100_000  # longest allowed cycle of the allocation (samples); bounds its table


@dataclass
class PhaseConfig:
    name: str
    weights: dict[str, float]  # source -> relative weight; unnamed sources get none
    until: float = 1.0  # fraction of max_steps where the phase ends

    def validate(self, key: str) -> None:
        check(self.name.strip() != "", f"{key}.name", "must not be empty")
        check(0 < self.until <= 1, f"{key}.until", f"must be in (0, 1], got {self.until}")
        integer_weights(self.weights, f"{key}.weights")


@dataclass
class MixtureConfig:
    phases: list[PhaseConfig] = field(default_factory=list)  # none: the natural distribution

    def validate(self, key: str) -> None:
        names: set[str] = set()
        for i, phase in enumerate(self.phases):
            phase.validate(f"{key}.phases[{i}]")
            check(phase.name not in names, f"{key}.phases[{i}].name",
                  f"phase {phase.name!r} is named twice")
            names.add(phase.name)
            if i > 0:
                check(phase.until > self.phases[i - 1].until, f"{key}.phases[{i}].until",
                      f"must be > the previous phase's ({self.phases[i - 1].until})")
        if self.phases:
            check(self.phases[-1].until == 1.0, f"{key}.phases[{len(self.phases) - 1}].until",
                  f"the last phase must end at 1.0, got {self.phases[-1].until}")

    def check_sources(self, present: Iterable[str], key: str = KEY) -> None:
        """Every source a phase names must be in the train tokens."""
        present = sorted(present)
        for i, phase in enumerate(self.phases):
            for name in phase.weights:
                check(name in present, f"{key}.phases[{i}].weights.{name}",
                      f"no source {name!r} in the train tokens; present: {', '.join(present)}")


def integer_weights(weights: dict[str, float], key: str) -> dict[str, int]:
    """The weights as the smallest integers in the same ratios (3 : 1, 0.7 : 0.3 -> 7 : 3)."""
    check(len(weights) > 0, key, "name at least one source")
    for name, w in weights.items():
        check(math.isfinite(w) and w >= 0, f"{key}.{name}", f"must be >= 0, got {w}")
    check(any(w > 0 for w in weights.values()), key, "at least one weight must be > 0")
    # float noise off (0.7 is not exactly 7/10 in binary), then a common denominator
    fractions = {name: Fraction(w).limit_denominator(10**6) for name, w in weights.items()}
    for name, f in fractions.items():
        check(f > 0 or weights[name] == 0, f"{key}.{name}", f"{weights[name]} is too small")
    scale = math.lcm(*(f.denominator for f in fractions.values()))
    ints = {name: int(f * scale) for name, f in fractions.items()}
    common = math.gcd(*ints.values())
    ints = {name: n // common for name, n in ints.items()}
    check(sum(ints.values()) <= MAX_CYCLE, key,
          f"these ratios repeat only every {sum(ints.values()):,} samples (at most "
          f"{MAX_CYCLE:,}); use simpler ones, such as small integers")
    return ints
