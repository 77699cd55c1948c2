"""Data mixtures with phases: which source each training sample comes from.

A recipe names sources with a relative weight per phase, so the last phase (the decay of a
warmup-stable-decay schedule) can upweight the best sources — "quality at the end":

    [[pretrain.mixture.phases]]
    name = "main"
    until = 0.8            # fraction of max_steps where the phase ends (the last one: 1.0)
    weights = { "cligs-textbox/nouvelles19" = 3, "wikipedia-fr" = 1 }
    [[pretrain.mixture.phases]]
    name = "anneal"
    until = 1.0
    weights = { "wikipedia-fr" = 2, "etalab/rgaa-methodologie" = 1 }

A source of the train tokens that a phase does not name gets no samples in that phase. With
no phases, windows are drawn from the whole train stream, the natural distribution.

Everything is a pure function of (seed, global sample index), so a resumed run, or a run on
any number of processes, sees the same windows:

- phase: a phase covers whole steps; it ends at step `max_steps - round((1 - until) *
  max_steps)`, which is how WSD places its decay (`schedule.decay_start`), so
  `until = 1 - decay_fraction` starts the last phase exactly on the decay's first step.
  Samples past `max_steps` stay in the last phase.
- source: inside a phase, samples go to sources along a fixed cycle in which each source gets
  exactly its weight's share, spread evenly (smooth weighted round-robin), so every batch
  holds the mix and the count of a source up to any sample is within one of its exact share.
  That count is read off the cycle, never by replaying earlier steps.
- window: each source is its own token stream (its documents in train order, even when other
  sources' documents lie between them), walked by a `WindowSampler` of its own, so a window
  never holds another source's tokens and a source's epochs go on across phases.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fournil.core.validation import check
from fournil.tokens.config import KEY, MixtureConfig, integer_weights
from fournil.tokens.shards import TokenDataset
from fournil.tokens.windows import WindowSampler
from fournil.train.schedule import decay_start


def phase_steps(mixture: MixtureConfig, max_steps: int) -> dict[str, tuple[int, int]]:
    """{phase: (first step, end step)}; a phase may be empty when max_steps is small."""
    # round(..., 12) undoes 1 - until's float noise, so until = 1 - decay_fraction gives
    # decay_start exactly the number WSD's own call gets
    if not mixture.phases:
        return {}
    ends = [decay_start(max_steps, round(1 - p.until, 12)) for p in mixture.phases]
    firsts = [0, *ends[:-1]]
    return {p.name: (a, b) for p, a, b in zip(mixture.phases, firsts, ends, strict=True)}


class Cycle:
    """The order in which one phase's samples go to its sources, repeating every `period`
    samples, in which source s gets exactly weight[s] (smooth weighted round-robin: each
    turn, every source earns its weight and the richest pays `period` for the sample)."""

    def __init__(self, weights: dict[str, int]):
        self.names = sorted(weights)  # sorted: ties go the same way however the recipe is written
        self.weights = [weights[n] for n in self.names]
        self.period = sum(self.weights)
        credit = [0] * len(self.names)
        order = []
        for _ in range(self.period):
            credit = [c + w for c, w in zip(credit, self.weights, strict=True)]
            s = credit.index(max(credit))
            credit[s] -= self.period
            order.append(s)
        self.order = order
        # where each source's samples fall in the cycle, to count them up to any position
        self.slots: list[list[int]] = [[] for _ in self.names]
        for j, s in enumerate(order):
            self.slots[s].append(j)

    def source(self, j: int) -> int:
        """The source (index into `names`) of sample `j` of the phase."""
        return self.order[j % self.period]

    def count(self, j: int, s: int) -> int:
        """How many of the phase's first `j` samples go to source `s`."""
        cycles, rest = divmod(j, self.period)
        return cycles * self.weights[s] + bisect.bisect_left(self.slots[s], rest)


class Allocation:
    """Phases and cycles over the global sample index; needs no data (see `tokens_seen`)."""

    def __init__(self, mixture: MixtureConfig, max_steps: int, samples_per_step: int):
        if not mixture.phases:
            raise ValueError("a mixture without phases has no allocation (natural distribution)")
        steps = phase_steps(mixture, max_steps)
        self.names = [p.name for p in mixture.phases]
        self.firsts = [steps[n][0] * samples_per_step for n in self.names]
        self.ends = [steps[n][1] * samples_per_step for n in self.names]
        self.ends[-1] = math.inf  # a run extended past max_steps stays in the last phase
        self.cycles = [Cycle(integer_weights(p.weights, f"{KEY}.phases[{i}].weights"))
                       for i, p in enumerate(mixture.phases)]
        self.sources = sorted({s for c in self.cycles for s in c.names})
        # samples each source got in all the phases before phase k
        self.before: list[dict[str, int]] = [dict.fromkeys(self.sources, 0)]
        for k, cycle in enumerate(self.cycles[:-1]):
            size = self.ends[k] - self.firsts[k]
            done = dict(self.before[-1])
            for s, name in enumerate(cycle.names):
                done[name] += cycle.count(size, s)
            self.before.append(done)

    def phase(self, index: int) -> int:
        return bisect.bisect_right(self.ends, index)  # empty phases are skipped

    def assign(self, index: int) -> tuple[str, int]:
        """(source, how many samples that source got before this one, over all phases)."""
        k = self.phase(index)
        cycle, j = self.cycles[k], index - self.firsts[k]
        s = cycle.source(j)
        name = cycle.names[s]
        return name, self.before[k][name] + cycle.count(j, s)

    def counts(self, n_samples: int) -> dict[str, dict[str, int]]:
        """{phase: {source: samples}} over the first `n_samples` samples."""
        out = {}
        for k, cycle in enumerate(self.cycles):
            size = max(0, min(n_samples, self.ends[k]) - self.firsts[k])
            out[self.names[k]] = {name: cycle.count(size, s) for s, name in enumerate(cycle.names)}
        return out


def tokens_seen(mixture: MixtureConfig, max_steps: int, samples_per_step: int, seq_len: int,
                upto_step: int) -> dict[str, dict[str, int]]:
    """{phase: {source: tokens}} trained on in steps [0, upto_step), for the manifest: every
    source each phase names (0 for a weight of 0). Empty for the natural distribution."""
    if not mixture.phases:
        return {}
    counts = Allocation(mixture, max_steps, samples_per_step).counts(upto_step * samples_per_step)
    return {phase: {s: n * seq_len for s, n in c.items()} for phase, c in counts.items()}


def source_spans(documents: pa.Table) -> dict[str, list[tuple[int, int]]]:
    """{source: [(start, end), ...]}: the runs of consecutive documents of each source."""
    if documents.num_rows == 0:
        return {}
    starts = documents.column("start").to_numpy()
    ends = starts + documents.column("n_tokens").to_numpy()
    codes = pc.dictionary_encode(documents.column("source")).combine_chunks()
    names, ids = codes.dictionary.to_pylist(), codes.indices.to_numpy()
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])  # where a run begins
    last = np.r_[first[1:], len(ids)] - 1
    spans: dict[str, list[tuple[int, int]]] = {}
    for a, b in zip(first, last, strict=True):
        spans.setdefault(names[ids[a]], []).append((int(starts[a]), int(ends[b])))
    return spans


class SourceStream:
    """One source's tokens as one stream (its spans end to end), walked by a WindowSampler."""

    def __init__(self, name: str, spans: list[tuple[int, int]], seq_len: int, seed: int):
        self.starts = [a for a, _ in spans]
        self.lengths = [b - a for a, b in spans]
        self.offsets = [0, *itertools.accumulate(self.lengths)]  # of each span in the stream
        n = self.offsets[-1]
        check(n >= seq_len + 2, f"{KEY}.phases", f"source {name!r} has {n} train tokens, too "
              f"few for windows of {seq_len} + 1; give it weight 0 or more data")
        # a seed of its own, so sources of equal size do not walk in step
        digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
        self.windows = WindowSampler(n, seq_len, int.from_bytes(digest[:8], "little"))

    def window(self, index: int) -> list[tuple[int, int]]:
        """(start, length) pieces, in the whole train stream, of the source's window `index`."""
        pos, left = self.windows.start(index), self.windows.seq_len + 1
        span = bisect.bisect_right(self.offsets, pos) - 1
        pieces = []
        while left > 0:
            within = pos - self.offsets[span]
            take = min(left, self.lengths[span] - within)
            pieces.append((self.starts[span] + within, take))
            pos, left, span = pos + take, left - take, span + 1
        return pieces


class MixtureSampler:
    """The window of every global sample index under a mixture, over the train tokens."""

    def __init__(self, data: TokenDataset, seq_len: int, seed: int, mixture: MixtureConfig,
                 max_steps: int, samples_per_step: int):
        self.seq_len = seq_len
        spans = source_spans(data.documents())
        # every span, in stream order, to name the source of a natural-distribution window
        flat = sorted((a, name) for name, ss in spans.items() for a, _ in ss)
        self._span_starts = [a for a, _ in flat]
        self._span_sources = [name for _, name in flat]
        self.allocation: Allocation | None = None
        if not mixture.phases:
            self.natural = WindowSampler(len(data), seq_len, seed)
            return
        mixture.check_sources(spans)
        self.allocation = Allocation(mixture, max_steps, samples_per_step)
        weighted = sorted({n for c in self.allocation.cycles
                           for n, w in zip(c.names, c.weights, strict=True) if w > 0})
        self.streams = {n: SourceStream(n, spans[n], seq_len, seed) for n in weighted}

    def window(self, index: int) -> list[tuple[int, int]]:
        """(start, length) pieces of sample `index`'s seq_len + 1 tokens in the train stream:
        one piece, or several when the source's documents are not contiguous."""
        if self.allocation is None:
            return [(self.natural.start(index), self.seq_len + 1)]
        source, local = self.allocation.assign(index)
        return self.streams[source].window(local)

    def source_of(self, index: int) -> str:
        """The source of sample `index` (natural distribution: of its first token)."""
        if self.allocation is None:
            start = self.natural.start(index)
            return self._span_sources[bisect.bisect_right(self._span_starts, start) - 1]
        return self.allocation.assign(index)[0]

    def phase_of(self, index: int) -> str | None:
        """The phase of sample `index`; None for the natural distribution."""
        if self.allocation is None:
            return None
        return self.allocation.names[self.allocation.phase(index)]

    def tokens_seen(self, n_samples: int) -> dict[str, dict[str, int]]:
        """{phase: {source: tokens}} in samples [0, n_samples), counting seq_len tokens a
        sample. Under a mixture, read off the allocation; for the natural distribution
        ("natural"), by the source of each window's first token, one lookup a sample."""
        if self.allocation is not None:
            counts = self.allocation.counts(n_samples)
        else:
            counts = {"natural": dict(Counter(map(self.source_of, range(n_samples))))}
        return {phase: {s: n * self.seq_len for s, n in c.items()} for phase, c in counts.items()}

    def read(self, data: TokenDataset, index: int) -> np.ndarray:
        """The seq_len + 1 tokens of sample `index`, as int64."""
        pieces = [data.read(a, n) for a, n in self.window(index)]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
