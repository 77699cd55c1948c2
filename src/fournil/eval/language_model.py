"""The interface every model `fournil eval` scores implements (`fournil.eval.lm` has the
engines and how a model folder picks one).

A task needs three things from a model, and only these: the log-probability of each token of
a text (bits-per-byte), of a continuation given a context (multiple choice), and a greedy
answer to a chat (OCR correction, cited RAG). `LanguageModel` implements the first two once,
over a `logits` method; each engine brings its tokenizer, its logits and its generation, and,
for copy-biased decoding (`fournil.model.copy_decoding`), its chat ids and a cached forward
pass that can be cut back (`new_scorer`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fournil.model.copy_decoding import CopyBias, CopyCursor, Scorer, copy_decode


class PromptTooLong(ValueError):
    """A chat longer than the model's context: the item is rejected, the run goes on."""


@dataclass(frozen=True)
class Continuation:
    """The score of a continuation given its context."""

    logprob: float  # sum of the continuation tokens' log-probabilities (nats)
    greedy: bool  # every continuation token is the model's most likely one
    tokens: int


def split_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    """Trailing spaces of the context move to the start of the continuation."""
    stripped = context.rstrip(" ")
    return stripped, context[len(stripped):] + continuation


class LanguageModel(ABC):
    name: str
    max_len: int  # the context window, in tokens
    bos: int | None  # prepended to every text the model reads, when its tokenizer does so
    prefix_id: int  # what an empty context is: the BOS token, else the end-of-text one
    device: torch.device

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS or any special token added."""

    @abstractmethod
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, vocab] (float32) for token ids [B, T]."""

    @abstractmethod
    def chat(self, messages: Sequence[dict], max_new_tokens: int) -> str:
        """The greedy answer to a chat, stopped at the end of the turn (or of the text), as
        text without special tokens. Raises PromptTooLong when the chat fills the context."""

    # --- copy-biased decoding (fournil.model.copy_decoding) and constrained quotes: every
    # engine (fournil, transformers, llama.cpp) brings a cached forward pass

    end_id: int  # the token that ends an assistant turn
    stop_ids: list[int]

    @abstractmethod
    def chat_ids(self, messages: Sequence[dict]) -> list[int]:
        """The chat's prompt ids, up to and including the assistant turn's header."""

    @abstractmethod
    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of `ids`, character for character (no clean-up of spaces)."""

    @abstractmethod
    def new_scorer(self) -> Scorer:
        """A forward pass with a cache that can be cut back."""

    @abstractmethod
    def token_bytes(self) -> list[bytes | None]:
        """The bytes each token id stands for (None: a special token), checked on a probe
        text (`fournil.formats.token_trie`): what constrained quotes walk."""

    def cursor(self, source: str, bias: CopyBias) -> CopyCursor:
        return CopyCursor(source, bias, self.encode,
                          lambda t: self.decode(t, skip_special=False), self.end_id,
                          self.stop_ids)

    def chat_copying(self, messages: Sequence[dict], source: str, bias: CopyBias,
                     max_new_tokens: int) -> str:
        """The answer to a chat whose answer is a corrected copy of `source`: copy-biased
        decoding (margin 0: greedy, only faster when the answer copies). The scorer is kept
        between calls, so a prompt prefix shared with the last call (a few-shot prompt's
        examples) is read once."""
        ids = self.chat_ids(messages)
        if len(ids) >= self.max_len:
            raise PromptTooLong(f"a chat of {len(ids)} tokens leaves no room to answer in "
                                f"{self.max_len}")
        if getattr(self, "_scorer", None) is None:
            self._scorer = self.new_scorer()
        out = copy_decode(self._scorer, ids, self.cursor(source, bias),
                          min(max_new_tokens, self.max_len - len(ids)))
        return self.decode(out)

    def answer_batch(self, chats: Sequence[Sequence[dict]], budgets: Sequence[int],
                     sources: Sequence[str] | None = None, bias: CopyBias | None = None
                     ) -> list[str]:
        """The greedy answer to each chat in at most its budget of tokens, copy-biased over
        its source when `bias` is given. One at a time here; an engine that batches
        generation does them together."""
        if bias is None:
            return [self.chat(c, b) for c, b in zip(chats, budgets, strict=True)]
        return [self.chat_copying(c, s, bias, b)
                for c, s, b in zip(chats, sources, budgets, strict=True)]

    def with_bos(self, ids: list[int]) -> list[int]:
        return [self.bos, *ids] if self.bos is not None else list(ids)

    @torch.inference_mode()
    def token_logprobs(self, sequences: Sequence[list[int]], batch_tokens: int = 4096
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each sequence of at most max_len + 1 ids: the log-probability of each token
        after the first given those before it, and whether it was the most likely one (two
        tensors of len - 1). Sequences are batched longest first, up to `batch_tokens`
        tokens a batch, padded on the right (causal attention: padding after a position
        cannot change its logits)."""
        for i, seq in enumerate(sequences):
            if not 2 <= len(seq) <= self.max_len + 1:
                raise ValueError(f"sequence {i}: {len(seq)} tokens, expected 2 to "
                                 f"{self.max_len + 1} (the context is {self.max_len})")
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        out: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(sequences)  # type: ignore
        start = 0
        while start < len(order):
            width = len(sequences[order[start]]) - 1
            rows = max(1, batch_tokens // width)
            batch = order[start:start + rows]
            start += len(batch)
            x = torch.zeros(len(batch), width, dtype=torch.long)
            y = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                seq = torch.tensor(sequences[i])
                x[row, :len(seq) - 1], y[row, :len(seq) - 1] = seq[:-1], seq[1:]
            logits = self.logits(x.to(self.device)).float()
            y = y.to(self.device)
            picked = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
            logprobs = picked - logits.logsumexp(-1)
            greedy = logits.argmax(-1) == y
            for row, i in enumerate(batch):
                n = len(sequences[i]) - 1
                out[i] = (logprobs[row, :n].cpu(), greedy[row, :n].cpu())
        return out

    def continuation_ids(self, context: str, continuation: str) -> tuple[list[int], int]:
        """The ids to score (context then continuation, left-truncated to the window) and how
        many of them, at the end, are the continuation."""
        context, continuation = split_trailing_space(context, continuation)
        if context:
            whole = self.with_bos(self.encode(context + continuation))
            n_context = len(self.with_bos(self.encode(context)))
            cont = whole[n_context:]
            ids = whole
        else:
            cont = self.encode(continuation)
            ids = [self.prefix_id, *cont]
        if not cont:
            raise ValueError(f"empty continuation {continuation!r}: nothing to score")
        return ids[-(self.max_len + 1):], len(cont)

    def loglikelihood(self, requests: Sequence[tuple[str, str]], batch_tokens: int = 4096
                      ) -> list[Continuation]:
        """The score of each (context, continuation)."""
        encoded = [self.continuation_ids(c, x) for c, x in requests]
        scores = self.token_logprobs([ids for ids, _ in encoded], batch_tokens)
        result = []
        for (ids, n), (logprobs, greedy) in zip(encoded, scores, strict=True):
            n = min(n, len(ids) - 1)  # a continuation longer than the window is cut too
            result.append(Continuation(float(logprobs[-n:].sum()), bool(greedy[-n:].all()), n))
        return result
