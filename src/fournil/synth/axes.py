"""Constraint axes: one value per axis for every sample, drawn deterministically.

Naive synthetic data asks one model the same question over and over and gets the same kind
of answer back. Varying explicit constraints (query type, difficulty, persona, register,
language, expected outcome) spreads the samples over the space the recipe describes; the
values drawn are recorded with each sample, so the report can show how well each axis was
covered. A sample's values depend only on (run seed, task, sample index): a resumed or
re-planned run draws the same ones.
"""

from __future__ import annotations

import hashlib
import random

from fournil.synth.config import Axis


def sample_rng(seed: int, *key: object) -> random.Random:
    """A random generator for one sample, from the run seed and the sample's identity."""
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_axes(axes: dict[str, Axis], rng: random.Random) -> dict[str, str]:
    """One value per axis. Each axis draws from its own generator (seeded from `rng` and the
    axis name), so adding an axis to a recipe leaves the other axes' values unchanged."""
    base = rng.getrandbits(64)
    values = {}
    for name in sorted(axes):
        axis = axes[name]
        values[name] = random.Random(f"{base}:{name}").choices(
            axis.values, weights=axis.weights or None)[0]
    return values


def coverage(axes: dict[str, Axis], drawn: list[dict[str, str]]) -> dict[str, dict]:
    """Per axis: the share of its values that appear in `drawn`, and each value's count."""
    out = {}
    for name, axis in sorted(axes.items()):
        counts = {v: 0 for v in axis.values}
        for values in drawn:
            if values.get(name) in counts:
                counts[values[name]] += 1
        seen = sum(c > 0 for c in counts.values())
        out[name] = {"coverage": seen / len(axis.values), "counts": counts}
    return out
