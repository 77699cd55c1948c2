"""The tokenizer stage: train BPE on curated documents, save it, report its fertility."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypedDict

from fournil.core.shards import iter_batches
from fournil.core.stage import Context, Manifest, Stage, upstream_hash
from fournil.tokenizer.config import TokenizerConfig
from fournil.tokenizer.train import capped, save_tokenizer, train_tokenizer


class TokenizerCounts(TypedDict):
    vocab_size: int
    sample_bytes: int  # of the text the fertility was measured on
    sample_tokens: int
    bytes_per_token: float
    tokens_per_word: float


class TokenizerManifest(Manifest):
    counts: TokenizerCounts


def _texts(documents_dir: Path):
    for batch in iter_batches(documents_dir, columns=["text"]):
        yield from batch.column("text").to_pylist()


def run(ctx: Context) -> TokenizerManifest:
    """`fournil tokenizer` and bake: BPE trained on the run's curated documents."""
    return run_tokenizer(ctx.folder("curate", "input"), ctx.out("tokenizer"),
                         ctx.recipe.tokenizer, ctx.recipe.model.max_seq_len)


def run_tokenizer(curate_dir: Path, out_dir: Path, config: TokenizerConfig,
                  max_length: int) -> TokenizerManifest:
    documents = Path(curate_dir) / "documents"
    stage = Stage("tokenizer", out_dir, inputs={"curate": upstream_hash(curate_dir)},
                  params={**dataclasses.asdict(config), "max_length": max_length})
    if manifest := stage.done():
        return manifest
    work = stage.start()
    tok = train_tokenizer(capped(_texts(documents), config.max_train_chars),
                          config.vocab_size, config.min_frequency)
    save_tokenizer(tok, work, max_length)
    # fertility on (a sample of) the training text: how many bytes each token carries
    sample = list(capped(_texts(documents), 2_000_000))
    n_bytes = sum(len(t.encode()) for t in sample)
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(sample, add_special_tokens=False))
    n_words = sum(len(t.split()) for t in sample)
    return stage.finish({
        "vocab_size": tok.get_vocab_size(),
        "sample_bytes": n_bytes,
        "sample_tokens": n_tokens,
        "bytes_per_token": round(n_bytes / max(n_tokens, 1), 4),
        "tokens_per_word": round(n_tokens / max(n_words, 1), 4),
    })
