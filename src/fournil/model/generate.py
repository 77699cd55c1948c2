"""Autoregressive generation with a KV cache: the prompt is run once (prefill), then each new
token costs one single-position forward pass.

`iter_tokens` is the primitive (a server streams from it); `generate` collects it and
`generate_text` wraps it with the tokenizer.

A `constraint` restricts what may be generated (quotes verbatim in their sources:
`fournil.formats.quote_constraint`): before each token, `constrain` sets the logits of the
tokens it forbids to -inf, so every sampler setting (greedy, temperature, top-k, top-p) only
ever picks an allowed one; after it, the constraint follows the choice. transformers models
served by fournil (`fournil.serve.engine.iter_hf_tokens`) go through the same two calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tokenizers import Tokenizer

from fournil.model.transformer import KVCache, Transformer

STOP_TOKENS = ("<|endoftext|>", "<|im_end|>")  # end of a document, end of a chat turn


def _check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"bad sampling parameters: temperature={temperature} (>= 0), "
                         f"top_k={top_k} (>= 0), top_p={top_p} (in (0, 1])")


GREEDY_BELOW_TEMPERATURE = 1e-5


class Constraint(Protocol):
    """What one generation may produce, followed token by token."""

    def allowed(self, remaining: int) -> np.ndarray | None:
        """A bool per token id of the tokenizer (True: may come next), or None when any token
        may. `remaining`: the tokens the generation may still produce, this one included, so
        that the constraint can finish what it opened before the budget runs out."""

    def advance(self, token: int) -> None:
        """The token that was generated."""


def constrain(logits: torch.Tensor, constraint: Constraint | None, remaining: int
              ) -> torch.Tensor:
    """`logits` [vocab] with the tokens the constraint forbids at -inf (a new tensor), and
    with every logit past the tokenizer's vocabulary (a padded embedding) forbidden too."""
    keep = None if constraint is None else constraint.allowed(remaining)
    if keep is None:
        return logits
    mask = torch.zeros(logits.shape[-1], dtype=torch.bool)
    n = min(len(keep), logits.shape[-1])
    mask[:n] = torch.from_numpy(keep[:n])
    return logits.masked_fill(~mask.to(logits.device), float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 0.8, top_k: int = 0,
                top_p: float = 1.0, generator: torch.Generator | None = None) -> int:
    """One token id from next-token logits [vocab]. temperature 0 is greedy; top_k keeps the k
    most likely tokens (0 = all); top_p keeps the smallest set of most likely tokens whose
    probabilities add up to at least top_p (nucleus sampling; 1 = all)."""
    _check_sampling(temperature, top_k, top_p)
    logits = logits.float()
    # In float32 a temperature this small is greedy in all but overflow (vLLM's rule)
    if temperature < GREEDY_BELOW_TEMPERATURE:
        return int(logits.argmax())
    logits = logits / temperature
    if 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        # drop a token when the more likely ones already reach top_p; the top one always stays
        drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        drop_sorted[0] = False  # a top_p that rounds to 0 in float32 must not drop it too
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def _forward_last(model: Transformer, ids: list[int], cache: KVCache) -> torch.Tensor:
    """Next-token logits after feeding `ids` at the cache's position."""
    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    return model(x, kv_cache=cache)[0, -1]


def iter_tokens(model: Transformer, prompt_ids: list[int], max_new_tokens: int,
                temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0,
                seed: int | None = None, stop_ids: Iterable[int] = (),
                constraint: Constraint | None = None) -> Iterator[int]:
    """Yields new token ids one at a time. A stop id is yielded too (so the caller can tell
    "stopped" from "ran out of tokens") and ends the stream. Generation also ends when the
    context reaches the model's max_seq_len; a prompt longer than that is an error. Only
    tokens the `constraint` allows are generated (module docstring).

    The same seed gives the same tokens on the same device. Inference mode is entered only
    around the forward passes, never held across a `yield`, so it does not leak into the
    consumer's code."""
    prompt_ids = list(prompt_ids)
    max_seq_len = model.config.max_seq_len
    if not prompt_ids:
        raise ValueError("empty prompt: at least one token (e.g. the BOS) is needed")
    if len(prompt_ids) > max_seq_len:
        raise ValueError(f"prompt of {len(prompt_ids)} tokens is longer than the model's "
                         f"context (max_seq_len={max_seq_len})")
    _check_sampling(temperature, top_k, top_p)  # now, rather than after the prefill
    if max_new_tokens <= 0:
        return
    stops = set(stop_ids)
    generator = torch.Generator(device=model.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)

    # The last sampled token never needs to be fed back, hence the -1.
    cache = model.new_kv_cache(1, min(max_seq_len, len(prompt_ids) + max_new_tokens - 1))
    logits = _forward_last(model, prompt_ids, cache)
    for step in range(max_new_tokens):
        # tokens left: the budget, or the context (the last token is never fed back)
        remaining = min(max_new_tokens - step, max_seq_len - cache.pos + 1)
        token = sample_next(constrain(logits, constraint, remaining), temperature, top_k,
                            top_p, generator)
        if constraint is not None:
            constraint.advance(token)
        yield token
        if token in stops or step == max_new_tokens - 1 or cache.pos >= max_seq_len:
            return
        logits = _forward_last(model, [token], cache)


def generate(model: Transformer, prompt_ids: list[int], max_new_tokens: int,
             temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0,
             seed: int | None = None, stop_ids: Iterable[int] = (),
             constraint: Constraint | None = None) -> list[int]:
    """The new tokens only (not the prompt), ending with the stop id if one was hit."""
    return list(iter_tokens(model, prompt_ids, max_new_tokens, temperature=temperature,
                            top_k=top_k, top_p=top_p, seed=seed, stop_ids=stop_ids,
                            constraint=constraint))


def load_for_generation(path: str | Path, device: torch.device | str = "cpu"
                        ) -> tuple[Transformer, Tokenizer]:
    """A model and its tokenizer from a fournil checkpoint folder or an HF export folder;
    both hold `tokenizer.json`."""
    path = Path(path)
    tokenizer_path = path / "tokenizer.json"
    if not tokenizer_path.exists():
        raise FileNotFoundError(f"{path}: no tokenizer.json next to the model")
    model = Transformer.load(path, device=device)
    model.eval()
    return model, Tokenizer.from_file(str(tokenizer_path))


def stop_token_ids(tokenizer: Tokenizer) -> list[int]:
    """The ids of <|endoftext|> and <|im_end|> that this tokenizer has."""
    ids = (tokenizer.token_to_id(t) for t in STOP_TOKENS)
    return [i for i in ids if i is not None]


def generate_text(model: Transformer, tokenizer: Tokenizer, prompt: str,
                  max_new_tokens: int = 64, **sampling) -> str:
    """Continues `prompt` and returns only the continuation. The tokenizer's post-processor
    prepends the <|endoftext|> BOS; generation stops at <|endoftext|> or <|im_end|> (plus any
    `stop_ids` given), and special tokens are left out of the text."""
    prompt_ids = tokenizer.encode(prompt).ids
    stops = set(stop_token_ids(tokenizer)) | set(sampling.pop("stop_ids", ()))
    new = generate(model, prompt_ids, max_new_tokens, stop_ids=stops, **sampling)
    return tokenizer.decode(new, skip_special_tokens=True)
