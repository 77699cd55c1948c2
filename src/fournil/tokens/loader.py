"""Batches of training windows: the inputs and next-token targets of consecutive samples.

A sampler (`windows.WindowSampler` over the whole stream, or `mixture.MixtureSampler` over
sources weighted by phase) maps a global sample index to its tokens; a batch is a pure
function of its first sample index, so resuming and any number of processes see the same
batches.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from fournil.tokens.shards import TokenDataset
from fournil.tokens.windows import WindowSampler

__all__ = ["Sampler", "WindowSampler", "get_batch"]


class Sampler(Protocol):
    def read(self, data: TokenDataset, index: int) -> np.ndarray: ...


def get_batch(data: TokenDataset, sampler: Sampler, first_sample: int, batch_size: int,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for samples [first_sample, first_sample + batch_size)."""
    rows = [sampler.read(data, first_sample + j) for j in range(batch_size)]
    chunk = torch.from_numpy(np.stack(rows))
    x, y = chunk[:, :-1], chunk[:, 1:]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
