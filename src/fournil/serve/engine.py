"""A model ready to answer requests: prompts and chats to token ids, and generations as text
pieces that stop at stop tokens or stop strings. The HTTP server, the terminal chat and the
serving bench all go through `ServedModel.complete`, so they produce the same text.

Two engines share that interface: `ServedModel` for fournil's own exports and checkpoints
(our Transformer, our ChatML encoder), and `HFServedModel` for any other transformers causal
LM with a chat template, from a folder or a `.gguf` file (dequantised by transformers).
`load_served` picks the one a path needs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from fournil.core.device import pick_device
from fournil.formats.chat_template import chat_encoder
from fournil.model.generate import (
    Constraint,
    constrain,
    iter_tokens,
    load_for_generation,
    sample_next,
    stop_token_ids,
)
from fournil.model.hf import hf_stop_ids, is_fournil_model, load_hf_model


@dataclass
class Sampling:
    """What a request asks of one generation (the OpenAI parameters fournil implements)."""

    max_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # strings that end the text, left out of it
    # what may be generated (quotes verbatim in their sources), one per generation
    constraint: Constraint | None = None


class TextStream:
    """Token ids in, text out, piece by piece: multi-byte characters split over tokens come
    out whole, and text that could be the start of a stop string is held back until it is
    clear whether it is one (so no client ever sees part of a stop string)."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.decoder = DecodeStream(skip_special_tokens=True)
        self.text = ""  # decoded so far (cut at the stop string once one is found)
        self.sent = 0  # characters of `text` handed out

    def push(self, token: int) -> tuple[str, bool]:
        """The new text that is safe to hand out, and whether a stop string was reached."""
        self.text += self.decoder.step(self.tokenizer, token) or ""
        # Held-back text never started a stop string earlier, so the search starts at `sent`.
        hits = [i for s in self.stop if (i := self.text.find(s, self.sent)) >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            return self.flush(), True
        end = len(self.text) - self._stop_prefix_len()
        piece, self.sent = self.text[self.sent:end], end
        return piece, False

    def flush(self) -> str:
        """Whatever is held back: the generation ended without completing a stop string."""
        piece, self.sent = self.text[self.sent:], len(self.text)
        return piece

    def _stop_prefix_len(self) -> int:
        """Length of the longest unsent end of the text that begins some stop string."""
        tail = self.text[self.sent:]
        for k in range(min(len(tail), max((len(s) for s in self.stop), default=0)), 0, -1):
            if any(s.startswith(tail[-k:]) for s in self.stop):
                return k
        return 0


class Completion:
    """One generation as text pieces. Iterate it (in the thread that should do the work);
    afterwards `finish_reason` is "stop" (a stop token or stop string), "length" (max_tokens
    or the context is full) or "cancelled", and `completion_tokens` counts the tokens the
    model generated (a stop token included)."""

    def __init__(self, served: ServedModel | HFServedModel, prompt_ids: list[int],
                 sampling: Sampling,
                 cancel: threading.Event | None = None) -> None:
        self.served, self.prompt_ids, self.sampling = served, prompt_ids, sampling
        self.cancel = cancel or threading.Event()
        self.finish_reason: str | None = None
        self.completion_tokens = 0

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    def __iter__(self) -> Iterator[str]:
        s, served = self.sampling, self.served
        text = TextStream(served.tokenizer, s.stop)
        tokens = served.tokens(self.prompt_ids, s)
        self.finish_reason = "length"
        if self.cancel.is_set():  # given up on while it waited for a slot
            self.finish_reason = "cancelled"
            return
        try:
            for token in tokens:
                self.completion_tokens += 1
                if token in served.stop_ids:
                    self.finish_reason = "stop"
                    break
                piece, stopped = text.push(token)
                if piece:
                    yield piece
                if stopped:
                    self.finish_reason = "stop"
                    return
                if self.cancel.is_set():  # the client went away: stop spending compute
                    self.finish_reason = "cancelled"
                    return
        finally:
            tokens.close()
        if tail := text.flush():
            yield tail

    def text(self) -> str:
        return "".join(self)


class ServedModel:
    """A fournil export (or checkpoint) loaded for serving, with its name and defaults."""

    def __init__(self, model_dir: str | Path, name: str | None = None,
                 device: str = "cpu") -> None:
        self.model_dir = Path(model_dir)
        self.model, self.tokenizer = load_for_generation(self.model_dir, pick_device(device))
        self.name = name or default_model_name(self.model_dir)
        self.max_seq_len = self.model.config.max_seq_len
        self.stop_ids = frozenset(stop_token_ids(self.tokenizer))
        self.chat = chat_encoder(self.tokenizer, self.model_dir)
        self.defaults = sampling_defaults(self.model_dir)
        self.created = int((self.model_dir / "model.safetensors").stat().st_mtime)

    def encode_prompt(self, prompt: str) -> list[int]:
        """A raw prompt with the BOS the model saw at every document start."""
        return self.tokenizer.encode(prompt).ids

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        return self.chat.encode(messages)

    def complete(self, prompt_ids: list[int], sampling: Sampling,
                 cancel: threading.Event | None = None) -> Completion:
        return Completion(self, prompt_ids, sampling, cancel)

    def tokens(self, prompt_ids: list[int], s: Sampling) -> Iterator[int]:
        """New token ids, a stop id included (what `Completion` turns into text)."""
        return iter_tokens(self.model, prompt_ids, s.max_tokens, temperature=s.temperature,
                           top_k=s.top_k, top_p=s.top_p, seed=s.seed, stop_ids=self.stop_ids,
                           constraint=s.constraint)


def default_model_name(model_dir: Path) -> str:
    """The recipe's name from an export's stage manifest, else the folder's name."""
    manifest = model_dir / "manifest.json"
    if manifest.exists():
        name = json.loads(manifest.read_text(encoding="utf-8")).get("params", {}).get("name")
        if name:
            return str(name)
    return model_dir.resolve().name


def sampling_defaults(model_dir: Path) -> dict:
    """temperature / top_k / top_p (and max_new_tokens, for the terminal chat) from the
    export's generation_config.json, i.e. the recipe's `[generate]` section, as vLLM does;
    OpenAI's defaults where there is none."""
    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return defaults_from_generation_config(config)


def defaults_from_generation_config(config: dict) -> dict:
    """The sampling defaults a generation config's explicit values set."""
    defaults = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 256}
    if config.get("do_sample") is False:
        defaults["temperature"] = 0.0
    defaults.update({k: config[k] for k in defaults if config.get(k) is not None})
    return defaults


# --- any transformers causal LM -------------------------------------------------------------


def iter_hf_tokens(model: object, prompt_ids: list[int], s: Sampling, stop_ids: frozenset[int],
                   max_seq_len: int) -> Iterator[int]:
    """`iter_tokens` for a transformers model: its own KV cache, our sampler (so a seed means
    the same thing on both engines) and the same constraint hook (`s.constraint`). Inference
    mode is never held across a `yield`."""
    if not prompt_ids:
        raise ValueError("empty prompt: at least one token is needed")
    if len(prompt_ids) > max_seq_len:
        raise ValueError(f"prompt of {len(prompt_ids)} tokens is longer than the model's "
                         f"context ({max_seq_len})")
    if s.max_tokens <= 0:
        return
    device = model.device  # type: ignore[attr-defined]
    generator = torch.Generator(device=device)
    if s.seed is None:
        generator.seed()
    else:
        generator.manual_seed(s.seed)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)  # type: ignore[operator]
    length = len(prompt_ids)
    for step in range(s.max_tokens):
        remaining = min(s.max_tokens - step, max_seq_len - length)  # this token included
        logits = constrain(out.logits[0, -1], s.constraint, remaining)
        token = sample_next(logits, s.temperature, s.top_k, s.top_p, generator)
        if s.constraint is not None:
            s.constraint.advance(token)
        yield token
        length += 1
        if token in stop_ids or step == s.max_tokens - 1 or length >= max_seq_len:
            return
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([[token]], device=device),  # type: ignore[operator]
                        past_key_values=out.past_key_values, use_cache=True)


class HFServedModel:
    """`ServedModel`'s interface over a transformers causal LM with a chat template, from a
    folder or a `.gguf` file. `tokenizer` is the underlying `tokenizers.Tokenizer` (what the
    server and `TextStream` use); `hf_tokenizer` renders chats with the model's template."""

    def __init__(self, path: str | Path, name: str | None = None, device: str = "cpu") -> None:
        self.model_dir = Path(path)
        self.model, self.hf_tokenizer = load_hf_model(self.model_dir, device)
        self.tokenizer: Tokenizer = self.hf_tokenizer.backend_tokenizer
        gguf = self.model_dir.suffix == ".gguf"
        self.name = name or (self.model_dir.stem if gguf else self.model_dir.resolve().name)
        self.max_seq_len = int(self.model.config.max_position_embeddings)
        self.stop_ids = hf_stop_ids(self.model, self.hf_tokenizer)
        # what the model's authors set (only the values they gave, as vLLM does)
        self.defaults = defaults_from_generation_config(
            self.model.generation_config.to_diff_dict())
        weights = self.model_dir if gguf else self.model_dir / "config.json"
        self.created = int(weights.stat().st_mtime)

    def encode_prompt(self, prompt: str) -> list[int]:
        """A raw prompt, with whatever BOS the model's tokenizer adds."""
        return list(self.hf_tokenizer(prompt)["input_ids"])

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        ids = list(self.hf_tokenizer.apply_chat_template(list(messages),
                                                         add_generation_prompt=True,
                                                         return_dict=False))
        bos = self.hf_tokenizer.bos_token_id
        if getattr(self.hf_tokenizer, "add_bos_token", False) and bos is not None and (
                not ids or ids[0] != bos):
            ids.insert(0, bos)  # as llama.cpp does for a GGUF that says add_bos_token
        return ids

    def complete(self, prompt_ids: list[int], sampling: Sampling,
                 cancel: threading.Event | None = None) -> Completion:
        return Completion(self, prompt_ids, sampling, cancel)

    def tokens(self, prompt_ids: list[int], s: Sampling) -> Iterator[int]:
        return iter_hf_tokens(self.model, prompt_ids, s, self.stop_ids, self.max_seq_len)


def load_served(path: str | Path, name: str | None = None, device: str = "cpu"
                ) -> ServedModel | HFServedModel:
    """The engine a path needs: fournil's for our exports and checkpoints, transformers' for
    any other model folder or a `.gguf` file."""
    if is_fournil_model(path):
        return ServedModel(path, name=name, device=device)
    return HFServedModel(path, name=name, device=device)
