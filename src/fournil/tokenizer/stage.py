"""The tokenizer stage: the run's tokenizer and its fertility on the curated text.

It trains a byte-level BPE on the curated documents, or, when the run starts from an open base
model (the base stage), adopts the base's own tokenizer: a model keeps the vocabulary it was
trained with. Either way the manifest says how many bytes a token carries on this corpus.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TypedDict

from tokenizers import Tokenizer

from fournil.core.shards import iter_batches
from fournil.core.stage import Context, Manifest, Stage, upstream_hash
from fournil.provenance.lineage import copy_lineage
from fournil.tokenizer.config import TokenizerConfig
from fournil.tokenizer.train import (
    TOKENIZER_FILES,
    capped,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)


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
    """`fournil tokenizer` and bake: BPE trained on the run's curated documents, or the base
    model's tokenizer when the recipe runs the base stage."""
    if ctx.recipe.runs("base"):
        return adopt_tokenizer(ctx.folder("base"), ctx.documents(),
                               ctx.out("tokenizer"))
    return run_tokenizer(ctx.documents(), ctx.out("tokenizer"),
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
    return stage.finish(fertility(tok, documents))


def adopt_tokenizer(base_dir: Path, curate_dir: Path, out_dir: Path) -> TokenizerManifest:
    """The base model's tokenizer files, as they are, with their fertility on this corpus; its
    lineage goes with them to every checkpoint saved with this tokenizer."""
    stage = Stage("tokenizer", out_dir, inputs={"base": upstream_hash(base_dir),
                                                "curate": upstream_hash(curate_dir)},
                  params={"adopted_from": "base"})
    if manifest := stage.done():
        return manifest
    work = stage.start()
    for name in TOKENIZER_FILES:
        if (Path(base_dir) / name).exists():
            shutil.copyfile(Path(base_dir) / name, work / name)
    copy_lineage(base_dir, work)
    return stage.finish(fertility(load_tokenizer(work), Path(curate_dir) / "documents"))


def fertility(tok: Tokenizer, documents: Path) -> TokenizerCounts:
    """How many bytes each token carries on (a sample of) the curated text."""
    sample = list(capped(_texts(documents), 2_000_000))
    n_bytes = sum(len(t.encode()) for t in sample)
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(sample, add_special_tokens=False))
    n_words = sum(len(t.split()) for t in sample)
    return {
        "vocab_size": tok.get_vocab_size(),
        "sample_bytes": n_bytes,
        "sample_tokens": n_tokens,
        "bytes_per_token": round(n_bytes / max(n_tokens, 1), 4),
        "tokens_per_word": round(n_tokens / max(n_words, 1), 4),
    }
