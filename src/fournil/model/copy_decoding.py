"""Copy-biased decoding: a correction that keeps what is already right.

A correction is mostly a copy of its input, and a small model's main failure is to rewrite
text that was right. So the input (the *source*) is the draft of the answer: at each position
the source's next token is kept unless the model's most likely token beats it by more than
`margin` nats,

    keep the draft d unless  log p(top) - log p(d) > margin     (the same as logit(top) - logit(d))

`margin = 0` is greedy decoding (the draft is kept only when it is the model's own choice),
`margin = inf` copies the source. In between, the model may change the source only where it
is confident that the source is wrong. Where the source ends, so does the answer (margin > 0:
a model asked to correct a piece cut mid-sentence would otherwise finish the sentence).

Speed comes from the same draft: while the model follows the source, `k` draft tokens are
verified in one forward pass (prompt-lookup / speculative decoding with the source as the
draft), the cache cut back to the first rejected one. With `margin = 0` this is exactly
greedy decoding, only faster when the answer copies its input. A `Scorer` is that forward
pass with a cache that can be cut back: fournil's Transformer (`TransformerScorer`, here),
`transformers` and llama.cpp (`fournil.eval.lm`, `fournil.eval.gguf_lm`) each bring one.

Once the model departs from the source (a word corrected, merged or split), its tokens and
the source's no longer line up. When the model's next choice starts a new word, the source
is realigned: the word boundary whose source text since the departure is closest (edit
distance) to what the model wrote since, and the draft goes on from there. A departure may
be held to `span` words (edit-constrained decoding): past them, the realigned source is
taken back whatever the model prefers, so a model that has wandered off into its own text
cannot carry on with it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from rapidfuzz.distance import Levenshtein

from fournil.model.transformer import Transformer

SPECULATE = (4, 16, 128)  # draft tokens verified per pass: (fewest, first, most)
# tokens without a word start that count as a word of their own: a departure must not
# escape realignment by never writing a space (a tiny model looping on "|" did)
LONG_WORD = 16


@dataclass(frozen=True)
class CopyBias:
    """How strongly an answer is held to its source: `margin` nats (0: greedy, inf: a
    copy), and `span`, the most words a departure may rewrite (0: no limit)."""

    margin: float
    span: int = 0

    def __post_init__(self) -> None:
        if not self.margin >= 0 or self.span < 0:  # NaN fails too
            raise ValueError(f"copy bias: margin must be >= 0 (nats) and span >= 0 (words), "
                             f"got margin={self.margin}, span={self.span}")


def choose(logits: torch.Tensor, draft: int | None, margin: float) -> int:
    """The token to write: `draft` unless the model's top token beats it by more than
    `margin` in log-probability (logits [vocab]; a difference of logits is one of
    log-probabilities). No draft: the top token."""
    top = int(logits.argmax())
    if draft is None or draft == top:
        return top
    return top if float(logits[top] - logits[draft]) > margin else draft


def realign(source: str, anchor: int, written: str) -> int:
    """The position in `source`, at a word boundary (before a space, or the end) at or after
    `anchor`, where the source text since `anchor` is closest to `written` (fewest edits,
    then closest length): where the copy resumes after the model rewrote a stretch."""
    limit = min(len(source), anchor + 2 * len(written) + 8)
    best, best_key = len(source), None
    for p in range(anchor, limit + 1):
        if p < len(source) and not source[p].isspace():
            continue
        key = (Levenshtein.distance(source[anchor:p], written), abs(p - anchor - len(written)))
        if best_key is None or key < best_key:
            best, best_key = p, key
    return best


class CopyCursor:
    """Where a correction stands in its source: the draft tokens to propose next, and the
    realignment after the model departs from them."""

    def __init__(self, source: str, bias: CopyBias, encode: Callable[[str], list[int]],
                 decode: Callable[[list[int]], str], end_id: int,
                 stop_ids: Iterable[int] = ()) -> None:
        self.source, self.bias = source, bias
        self.encode, self.decode, self.end_id = encode, decode, end_id
        self.stops = {end_id, *stop_ids}
        # margin 0 stays greedy decoding, which may go on past the source's end
        self.hold_end = bias.margin > 0
        self._word_start: dict[int, bool] = {}
        self._restart(0)

    def _restart(self, pos: int) -> None:
        self.pos = pos  # where, in the source, the draft begins
        self.draft = [*self.encode(self.source[pos:]), self.end_id] if pos < len(
            self.source) else [self.end_id]
        self.taken = 0  # draft tokens kept since `pos`
        self.written: list[int] | None = None  # the model's tokens since it departed
        self.anchor = pos  # where, in the source, it departed

    def mid_char(self) -> bool:
        """Whether the draft kept so far ends inside a character (byte-level BPE cuts a rare
        one into several tokens): the draft is then kept whatever the model prefers, since
        a departure there would write half of one character and half of another (ſ is
        C5 BF, ň C5 88). A character is at most 4 bytes, so the last 4 tokens tell."""
        return self.decode(self.draft[max(0, self.taken - 4):self.taken]).endswith("\ufffd")

    def starts_word(self, token: int) -> bool:
        if token not in self._word_start:
            self._word_start[token] = self.decode([token])[:1].isspace()
        return self._word_start[token]

    def proposal(self, top: int) -> tuple[int | None, bool]:
        """The draft token that competes with the model's `top` token now, and whether it
        is forced: the end of the answer where the source ends (margin > 0), or the
        source's next word once a departure has rewritten `span` words.
        While departed, there is no draft until `top` would start a word or end the answer
        (or the word has run for LONG_WORD tokens): then the source is realigned and its
        next word is proposed."""
        if self.written is None:
            draft = self.draft[self.taken]
            return draft, (self.hold_end and draft == self.end_id) or self.mid_char()
        words, run = self._words(self.written)
        if not (self.starts_word(top) or top in self.stops or run >= LONG_WORD):
            return None, False
        anchor, written = self.anchor, self.written
        self._restart(realign(self.source, anchor, self.decode(written)))
        self.anchor, self.written = anchor, written  # departed until the proposal is kept
        at_end = self.hold_end and self.draft[0] == self.end_id
        return self.draft[0], at_end or 0 < self.bias.span <= words

    def _words(self, tokens: list[int]) -> tuple[int, int]:
        """(words in `tokens`, tokens of the last one): a word starts at a token that starts
        with whitespace, or after LONG_WORD tokens without one."""
        words = run = 0
        for i, token in enumerate(tokens):
            if i == 0 or run >= LONG_WORD or self.starts_word(token):
                words, run = words + 1, 0
            run += 1
        return words, run

    def choose(self, logits: torch.Tensor) -> int:
        """The token to write now (see `choose`), the cursor moved past it."""
        top = int(logits.argmax())
        draft, forced = self.proposal(top)
        token = choose(logits, draft, math.inf if forced else self.bias.margin)
        if token == draft:
            self.kept(1)
        else:
            self.departed(token)
        return token

    def upcoming(self, n: int) -> list[int]:
        """The next `n` draft tokens (fewer at the end of the source)."""
        return self.draft[self.taken:self.taken + n]

    def kept(self, n: int) -> None:
        self.taken += n
        self.written = None

    def departed(self, token: int) -> None:
        """The model wrote `token` instead of the draft's."""
        if self.written is None:
            self.anchor = self.pos + len(self.decode(self.draft[:self.taken]))
            self.written = []
        self.written.append(token)


class Scorer(ABC):
    """A causal LM's forward pass over a cache that grows with each `feed` and can be cut
    back: what copy-biased decoding needs from an engine. `start` reuses the cached prefix a
    new prompt shares with the last one (a few-shot prompt's examples are read once)."""

    def __init__(self) -> None:
        self.ids: list[int] = []  # the tokens in the cache, in order

    @abstractmethod
    def _forward(self, ids: list[int]) -> torch.Tensor:
        """Next-token logits [len(ids), vocab] after each of `ids`, fed after the cache."""

    @abstractmethod
    def _truncate(self, length: int) -> None:
        """Keep the first `length` cached positions."""

    def feed(self, ids: list[int]) -> torch.Tensor:
        logits = self._forward(list(ids))
        self.ids += ids
        return logits

    def truncate(self, length: int) -> None:
        if length < len(self.ids):
            self._truncate(length)
            del self.ids[length:]

    def start(self, prompt: list[int]) -> torch.Tensor:
        """The next-token logits after `prompt`, reading only what the cache lacks."""
        common = 0
        for a, b in zip(self.ids, prompt[:-1], strict=False):  # at least one token is read
            if a != b:
                break
            common += 1
        self.truncate(common)
        return self.feed(prompt[common:])[-1]


class TransformerScorer(Scorer):
    """fournil's Transformer with its KV cache (cut back by moving its position). The cache
    starts at `start_len` positions and doubles when full, up to the model's context: a
    135M model's full 8k context would hold 380 MB for answers of a few hundred tokens."""

    def __init__(self, model: Transformer, start_len: int = 1024) -> None:
        super().__init__()
        self.model = model
        self.cache = model.new_kv_cache(1, min(start_len, model.config.max_seq_len))

    def _grow(self, needed: int) -> None:
        limit = self.model.config.max_seq_len
        if needed > limit:
            raise ValueError(f"{needed} positions: longer than the model's context ({limit})")
        old = self.cache
        self.cache = self.model.new_kv_cache(1, min(limit, max(needed, 2 * old.max_len)))
        self.cache.k[..., :old.pos, :] = old.k[..., :old.pos, :]
        self.cache.v[..., :old.pos, :] = old.v[..., :old.pos, :]
        self.cache.pos = old.pos

    @torch.inference_mode()
    def _forward(self, ids: list[int]) -> torch.Tensor:
        if self.cache.pos + len(ids) > self.cache.max_len:
            self._grow(self.cache.pos + len(ids))
        x = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        return self.model(x, kv_cache=self.cache)[0].float()

    def _truncate(self, length: int) -> None:
        self.cache.pos = length


def copy_decode(scorer: Scorer, prompt: list[int], cursor: CopyCursor, max_new_tokens: int
                ) -> list[int]:
    """The answer's token ids (ending with a stop id if one was written), decoded with the
    cursor's copy bias over its source."""
    logits = scorer.start(prompt)
    out: list[int] = []
    fewest, k, most = SPECULATE
    while True:
        token = cursor.choose(logits)
        out.append(token)
        if token in cursor.stops or len(out) >= max_new_tokens:
            return out
        if cursor.written is not None:  # departed from the source: one token at a time
            logits = scorer.feed([token])[-1]
            continue
        # following the source: read the next draft tokens in the same pass, keep what the
        # rule keeps, and cut the cache back after the first token it does not
        ahead = cursor.upcoming(min(k - 1, max_new_tokens - len(out)))
        for i, draft in enumerate(ahead):
            if draft in cursor.stops:
                ahead = ahead[:i + 1]  # nothing is read after the end
                break
        base = len(scorer.ids)
        verified = scorer.feed([token, *ahead])
        for i, draft in enumerate(ahead):
            token = cursor.choose(verified[i])
            out.append(token)
            if token != draft:
                scorer.truncate(base + 1 + i)
                k = max(fewest, i + 1)
                break
            if token in cursor.stops or len(out) >= max_new_tokens:
                return out
        else:
            logits = verified[len(ahead)]
            k = min(2 * k, most)
            continue
        if token in cursor.stops or len(out) >= max_new_tokens:
            return out
        logits = scorer.feed([token])[-1]
