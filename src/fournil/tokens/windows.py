"""Which window of the train tokens each training sample reads.

The window for global sample `i` is a pure function of (seed, i): samples walk through
epochs, each epoch a seeded permutation of non-overlapping windows with a seeded offset.
So the batch of any step can be recomputed from the step number alone: resuming needs no
loader state, and the order does not depend on how many processes share the work. Data
mixtures (mixture.py) give each source a WindowSampler of its own.
"""

from __future__ import annotations

import numpy as np

from fournil.tokens.shards import TokenDataset


class WindowSampler:
    def __init__(self, n_tokens: int, seq_len: int, seed: int):
        if n_tokens < seq_len + 2:
            raise ValueError(f"{n_tokens} tokens are too few for windows of {seq_len} + 1")
        self.n_tokens, self.seq_len, self.seed = n_tokens, seq_len, seed
        # the largest offset that still leaves as many windows as any other offset
        self.max_offset = seq_len - 1 if self._windows_in(seq_len - 1) > 0 else 0
        self.windows_per_epoch = self._windows_in(self.max_offset)
        self._epoch, self._offset, self._perm = -1, 0, np.empty(0, dtype=np.int64)

    def _windows_in(self, offset: int) -> int:
        return (self.n_tokens - 1 - offset) // self.seq_len

    def start(self, index: int) -> int:
        """Token offset of the window for global sample `index`."""
        epoch, within = divmod(index, self.windows_per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._offset = int(rng.integers(0, self.max_offset + 1))
            self._perm = rng.permutation(self.windows_per_epoch)
            self._epoch = epoch
        return self._offset + int(self._perm[within]) * self.seq_len

    def read(self, data: TokenDataset, index: int) -> np.ndarray:
        """The seq_len + 1 tokens of sample `index`."""
        return data.read(self.start(index), self.seq_len + 1)
