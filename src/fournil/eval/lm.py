"""One interface over every model `fournil eval` scores (`fournil.eval.language_model`): our
Transformer (a checkpoint or an export, here), any Hugging Face causal LM folder
(`fournil.eval.hf_lm`) and a GGUF file through llama.cpp (`fournil.eval.gguf_lm`).

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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fournil.core.device import pick_device
from fournil.eval.gguf_lm import LlamaCppLM
from fournil.eval.hf_lm import HFLM
from fournil.eval.language_model import (
    Continuation,
    LanguageModel,
    PromptTooLong,
    split_trailing_space,
)
from fournil.formats.chat_template import chat_encoder
from fournil.formats.token_trie import token_bytes
from fournil.model.copy_decoding import Scorer, TransformerScorer
from fournil.model.generate import generate, load_for_generation, stop_token_ids
from fournil.model.hf import is_fournil_model

__all__ = ["HFLM", "Continuation", "FournilLM", "LanguageModel", "LlamaCppLM", "ModelSpec",
           "PromptTooLong", "load_lm", "split_trailing_space"]


class FournilLM(LanguageModel):
    """Our Transformer, from a checkpoint or an export folder: chats are encoded in the model's
    chat format (`chat_encoder`) and answered with the KV-cache generation of
    `fournil.model.generate`."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 name: str | None = None) -> None:

        self.path = Path(path)
        self.name = name or str(path)
        self.device = pick_device(str(device))
        self.model, self.tokenizer = load_for_generation(self.path, self.device)
        self.model.float()  # scores in float32 whatever the stored dtype
        self.max_len = self.model.config.max_seq_len
        self.encoder = chat_encoder(self.tokenizer, self.path)
        # the BOS its tokenizer puts in front of text (fournil's), none for a base that has none
        with_specials = self.tokenizer.encode("a").ids
        plain = self.tokenizer.encode("a", add_special_tokens=False).ids
        self.bos = with_specials[0] if len(with_specials) > len(plain) else None
        self.prefix_id = self.bos if self.bos is not None else self.encoder.pad_id
        self.stop_ids = stop_token_ids(self.tokenizer)
        im_end = self.tokenizer.token_to_id("<|im_end|>")
        self.end_id = im_end if im_end in self.stop_ids else self.stop_ids[0]

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

    def chat_ids(self, messages: Sequence[dict]) -> list[int]:
        return self.encoder.encode(messages)

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def new_scorer(self) -> Scorer:
        return TransformerScorer(self.model)

    def token_bytes(self) -> list[bytes | None]:
        return token_bytes(self.tokenizer)


@dataclass(frozen=True)
class ModelSpec:
    """`[LABEL=][hf:]PATH` on the command line: hf: runs a fournil folder through
    transformers instead of our Transformer; a PATH ending in .gguf runs in llama.cpp."""

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
    for anything else (or when the spec says `hf:`); llama.cpp for a .gguf file. A Path is a
    folder or a file, never parsed."""
    if isinstance(spec, Path):
        spec = ModelSpec(str(spec), spec, "auto")
    elif not isinstance(spec, ModelSpec):
        spec = ModelSpec.parse(spec)
    if spec.path.suffix == ".gguf":
        return LlamaCppLM(spec.path, name=spec.label)
    if not (spec.path / "config.json").is_file():
        raise FileNotFoundError(f"{spec.path}: no config.json (not a model folder)")
    engine = spec.engine
    if engine == "auto":
        engine = "fournil" if is_fournil_model(spec.path) else "hf"
    cls = FournilLM if engine == "fournil" else HFLM
    return cls(spec.path, device=device, name=spec.label)
