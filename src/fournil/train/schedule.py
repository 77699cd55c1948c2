"""Learning-rate schedules as pure functions of the step (so resuming needs no state).

Each returns the multiplier of the peak learning rate. Cosine decays from the end of warmup
to the last step. Warmup-stable-decay (WSD; MiniCPM, DeepSeek, nanochat) holds the peak for
most of the run and decays only at the end: the plateau's checkpoints can be continued or
decayed later, and the decay is where "quality at the end" data mixtures go.
"""

from __future__ import annotations

import math


def warmup(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps


def warmup_cosine(step: int, max_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup, then cosine down to `min_ratio` at `max_steps`."""
    if step < warmup_steps:
        return warmup(step, warmup_steps)
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def decay_start(max_steps: int, decay_fraction: float) -> int:
    """The first step of WSD's decay."""
    return max_steps - round(decay_fraction * max_steps)


def warmup_stable_decay(step: int, max_steps: int, warmup_steps: int, min_ratio: float,
                        decay_fraction: float) -> float:
    """Linear warmup, the peak until the last `decay_fraction` of the steps, then linear
    down to `min_ratio` at the last step."""
    if step < warmup_steps:
        return warmup(step, warmup_steps)
    start = decay_start(max_steps, decay_fraction)
    if step < start:
        return 1.0
    progress = (step + 1 - start) / max(1, max_steps - start)
    return 1.0 - (1.0 - min_ratio) * min(progress, 1.0)


def lr_multiplier(step: int, max_steps: int, schedule: str, warmup_steps: int,
                  min_ratio: float, decay_fraction: float) -> float:
    if schedule == "cosine":
        return warmup_cosine(step, max_steps, warmup_steps, min_ratio)
    if schedule == "wsd":
        return warmup_stable_decay(step, max_steps, warmup_steps, min_ratio, decay_fraction)
    raise ValueError(f"unknown schedule {schedule!r} (cosine or wsd)")
