"""One interface over every model `fournil eval` scores: our Transformer (a checkpoint or an
export) and any Hugging Face causal LM folder.

A task needs three things from a model, and only these: the log-probability of each token of
a text (bits-per-byte), of a continuation given a context (multiple choice), and a greedy
answer to a chat (OCR correction, cited RAG). `LanguageModel` implements the first two once,
over a `logits` method; each engine brings its tokenizer, its logits and its generation.

Conventions, as in lm-evaluation-harness so numbers compare:
- a context and its continuation are encoded together and split where the context's tokens
  end, trailing spaces of the context moving to the continuation (BPE glues a space to the
  word after it);
- sequences longer than the context window lose their oldest tokens;
- a model whose tokenizer starts every text with a BOS token gets it (ours does: the model
  saw `<|endoftext|>` at every document start); an empty context, and the start of a
  held-out document, is the tokenizer's BOS token (even one it does not add itself, as
  SmolLM2's `<|im_start|>`), else its end-of-text token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fournil.core.device import pick_device
from fournil.formats.chatml import ChatEncoder
from fournil.model.generate import generate, load_for_generation, stop_token_ids
from fournil.model.hf import is_fournil_model


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


class FournilLM(LanguageModel):
    """Our Transformer, from a checkpoint or an export folder: chats are encoded with
    `ChatEncoder` and answered with the KV-cache generation of `fournil.model.generate`."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 name: str | None = None) -> None:

        self.path = Path(path)
        self.name = name or str(path)
        self.device = pick_device(str(device))
        self.model, self.tokenizer = load_for_generation(self.path, self.device)
        self.model.float()  # scores in float32 whatever the stored dtype
        self.max_len = self.model.config.max_seq_len
        self.encoder = ChatEncoder(self.tokenizer)
        self.bos = self.prefix_id = self.encoder.bos
        self.stop_ids = stop_token_ids(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids).float()

    def chat(self, messages: Sequence[dict], max_new_tokens: int) -> str:

        ids = self.encoder.encode(messages)
        if len(ids) >= self.max_len:
            raise PromptTooLong(f"a chat of {len(ids)} tokens leaves no room to answer in "
                                f"{self.max_len}")
        new = generate(self.model, ids, min(max_new_tokens, self.max_len - len(ids)),
                       temperature=0.0, stop_ids=self.stop_ids)
        return self.tokenizer.decode(new, skip_special_tokens=True)


class HFLM(LanguageModel):
    """Any causal LM folder `transformers` loads: chats go through the tokenizer's own chat
    template and `model.generate` (greedy)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 name: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.path = Path(path)
        self.name = name or str(path)
        self.device = pick_device(str(device))
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
        self.model.to(self.device).eval()
        config = self.model.config
        self.max_len = (getattr(config, "max_position_embeddings", None)
                        or self.tokenizer.model_max_length)
        tok = self.tokenizer
        # The BOS when the tokenizer puts one in front of text (as the model was trained)
        probe = tok("a").input_ids
        self.bos = tok.bos_token_id if probe and probe[0] == tok.bos_token_id else None
        eos = tok.eos_token_id
        # as lm-evaluation-harness: the BOS token even when the tokenizer does not add it
        self.prefix_id = tok.bos_token_id if tok.bos_token_id is not None else eos
        if self.prefix_id is None:
            raise ValueError(f"{path}: the tokenizer has neither a BOS nor an EOS token")
        stops = set()
        for ids in (self.model.generation_config.eos_token_id, eos,
                    tok.convert_tokens_to_ids("<|im_end|>")):
            stops |= set(ids if isinstance(ids, list) else [ids])
        self.stop_ids = sorted(i for i in stops if i is not None and i != tok.unk_token_id)
        # Greedy, replacing the folder's sampling defaults (transformers merges the two and
        # warns about sampling flags on a greedy call otherwise).
        self.model.generation_config = GenerationConfig(
            do_sample=False, eos_token_id=self.stop_ids,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else self.prefix_id)

    def encode(self, text: str) -> list[int]:
        # verbose=False: a held-out document longer than the context is expected (it is read
        # in windows), not the mistake transformers warns about
        return self.tokenizer(text, add_special_tokens=False, verbose=False).input_ids

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids).logits.float()

    def chat_ids(self, messages: Sequence[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=True)
        ids = self.encode(text)
        return ids if ids[:1] == [self.bos] else self.with_bos(ids)

    @torch.inference_mode()
    def chat(self, messages: Sequence[dict], max_new_tokens: int) -> str:
        ids = self.chat_ids(messages)
        if len(ids) >= self.max_len:
            raise PromptTooLong(f"a chat of {len(ids)} tokens leaves no room to answer in "
                                f"{self.max_len}")
        x = torch.tensor([ids], device=self.device)
        out = self.model.generate(x, attention_mask=torch.ones_like(x),
                                  max_new_tokens=min(max_new_tokens, self.max_len - len(ids)))
        return self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


@dataclass(frozen=True)
class ModelSpec:
    """`[LABEL=][hf:]PATH` on the command line: hf: runs a fournil folder through
    transformers instead of our Transformer."""

    label: str
    path: Path
    engine: str  # "auto" | "fournil" | "hf"

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        label, sep, rest = spec.partition("=")
        if not sep:
            label, rest = "", spec
        engine = "auto"
        for prefix in ("hf:", "fournil:"):
            if rest.startswith(prefix):
                engine, rest = prefix[:-1], rest[len(prefix):]
        if not rest:
            raise ValueError(f"model {spec!r}: no path (expected [LABEL=][hf:]PATH)")
        return cls(label or rest, Path(rest), engine)


def load_lm(spec: str | Path | ModelSpec, device: str | torch.device = "cpu") -> LanguageModel:
    """The adapter for a model folder: ours for fournil checkpoints and exports, transformers
    for anything else (or when the spec says `hf:`). A Path is a folder, never parsed."""
    if isinstance(spec, Path):
        spec = ModelSpec(str(spec), spec, "auto")
    elif not isinstance(spec, ModelSpec):
        spec = ModelSpec.parse(spec)
    if not (spec.path / "config.json").is_file():
        raise FileNotFoundError(f"{spec.path}: no config.json (not a model folder)")
    engine = spec.engine
    if engine == "auto":
        engine = "fournil" if is_fournil_model(spec.path) else "hf"
    cls = FournilLM if engine == "fournil" else HFLM
    return cls(spec.path, device=device, name=spec.label)
