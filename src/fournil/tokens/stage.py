"""The tokenize stage: curated documents -> train/val token shards with provenance counts.

Validation holds out whole documents, chosen by a hash of their id so the split is stable
when the corpus grows, until about `val_fraction` of each source's characters are held out;
every source with two or more documents gets at least one in validation, so bits-per-byte
can be reported per source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

from tokenizers import Tokenizer
from tqdm import tqdm

from fournil.core.shards import count_rows, iter_batches, iter_records
from fournil.core.stage import Context, Manifest, Stage, read_manifest, upstream_hash
from fournil.core.validation import RecipeError
from fournil.formats.chatml import ENDOFTEXT
from fournil.synth.sample import sample_to_text
from fournil.tokenizer.train import load_tokenizer
from fournil.tokens.config import TokensConfig
from fournil.tokens.shards import TokenShardWriter, token_dtype


def _unit_hash(doc_id: str) -> float:
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2**64


def choose_validation(chars_by_source: dict[str, dict[str, int]], fraction: float) -> set[str]:
    """Document ids to hold out: {source: {id: n_chars}} -> ids."""
    val: set[str] = set()
    for chars in chars_by_source.values():
        budget, held = fraction * sum(chars.values()), 0
        for doc_id in sorted(chars, key=_unit_hash):
            first = held == 0 and len(chars) >= 2
            if first or held + chars[doc_id] / 2 <= budget:
                val.add(doc_id)
                held += chars[doc_id]
    return val


class TokenTally(TypedDict):
    docs: int
    tokens: int
    bytes: int  # UTF-8 bytes of the text: what bits-per-byte divides by


class SplitCounts(TypedDict):
    docs: int
    tokens: int
    by_source: dict[str, TokenTally]
    by_license: dict[str, TokenTally]


class TokensCounts(TypedDict):
    train: SplitCounts
    val: SplitCounts


class TokensManifest(Manifest):
    counts: TokensCounts
    dtype: str  # of the shards: <u2 (vocab <= 65,536) or <u4
    vocab_size: int


def document_separator(tok: Tokenizer) -> list[int]:
    """What goes before each document: nothing when the tokenizer puts its BOS there itself
    (fournil's), else `<|endoftext|>`, the boundary the open bases that have it (SmolLM2,
    Qwen) were pretrained with, so that windows never run two documents together unmarked."""
    adds_bos = len(tok.encode("a").ids) > len(tok.encode("a", add_special_tokens=False).ids)
    separator = tok.token_to_id(ENDOFTEXT)
    return [] if adds_bos or separator is None else [separator]


def _empty_counts() -> dict:
    return {"docs": 0, "tokens": 0, "bytes": 0}


def _batched(items: Iterator[dict], n: int) -> Iterator[list[dict]]:
    while batch := list(itertools.islice(items, n)):
        yield batch


def synthetic_documents(synth_dir: Path) -> Iterator[dict]:
    """The synth stage's train-split samples as documents: the whole chat in ChatML."""
    for sample in iter_records(Path(synth_dir) / "samples"):
        if sample["split"] == "train":
            yield {"id": sample["id"], "text": sample_to_text(sample),
                   "source": sample["source"], "license": sample["license"]}


def run(ctx: Context) -> TokensManifest:
    """`fournil tokens` and bake: the run's curated documents (and, with `tokens.synth`, its
    synthetic train samples) as token shards, with the held-out split."""
    return run_tokens(ctx.documents(), ctx.folder("tokenizer", "tokenizer"),
                      ctx.out("tokens"), ctx.recipe.tokens, synth_dir=ctx.folder("synth"))


def run_tokens(curate_dir: Path, tokenizer_dir: Path, out_dir: Path, config: TokensConfig,
               batch_docs: int = 64, synth_dir: Path | None = None) -> TokensManifest:
    """Curated documents (and, with `config.synth`, the synth stage's train samples, all in
    the train split) into token shards."""
    documents = Path(curate_dir) / "documents"
    inputs = {"curate": upstream_hash(curate_dir), "tokenizer": upstream_hash(tokenizer_dir)}
    if config.synth:
        if synth_dir is None or read_manifest(synth_dir) is None:
            raise RecipeError(f"tokens.synth: no completed synth stage at {synth_dir}; add "
                              "\"synth\" to the recipe's stages")
        inputs["synth"] = upstream_hash(synth_dir)
    stage = Stage("tokens", out_dir, inputs=inputs, params=dataclasses.asdict(config))
    if manifest := stage.done():
        return manifest
    work = stage.start()
    tok = load_tokenizer(tokenizer_dir)
    dtype = token_dtype(tok.get_vocab_size())

    chars_by_source: dict[str, dict[str, int]] = defaultdict(dict)
    for batch in iter_batches(documents, columns=["id", "source", "n_chars"]):
        for row in batch.to_pylist():
            chars_by_source[row["source"]][row["id"]] = row["n_chars"]
    val_ids = choose_validation(chars_by_source, config.val_fraction)

    writers = {split: TokenShardWriter(work / split, dtype) for split in ("train", "val")}
    counts = {split: {"by_source": defaultdict(_empty_counts),
                      "by_license": defaultdict(_empty_counts)} for split in writers}
    columns = ["id", "text", "source", "license"]
    total = count_rows(documents) + (count_rows(Path(synth_dir) / "samples") if config.synth
                                     else 0)  # every synthetic split: an upper bound
    bar = tqdm(total=total, desc="tokens", unit="doc", mininterval=1.0)
    curated = (batch.to_pylist() for batch in iter_batches(documents, columns=columns,
                                                           batch_size=batch_docs))
    synthetic = _batched(synthetic_documents(synth_dir), batch_docs) if config.synth else ()
    separator = document_separator(tok)
    for docs in itertools.chain(curated, synthetic):
        encodings = tok.encode_batch_fast([d["text"] for d in docs], add_special_tokens=True)
        for doc, enc in zip(docs, encodings, strict=True):
            split = "val" if doc["id"] in val_ids else "train"
            n_bytes = len(doc["text"].encode())
            ids = separator + enc.ids
            writers[split].add(ids, doc, n_bytes)
            for key, name in (("by_source", doc["source"]), ("by_license", doc["license"])):
                c = counts[split][key][name]
                c["docs"] += 1
                c["tokens"] += len(ids)
                c["bytes"] += n_bytes
        bar.update(len(docs))
    bar.close()
    for writer in writers.values():
        writer.close()

    summary = {}
    for split, c in counts.items():
        summary[split] = {
            "docs": sum(v["docs"] for v in c["by_source"].values()),
            "tokens": sum(v["tokens"] for v in c["by_source"].values()),
            "by_source": dict(c["by_source"]),
            "by_license": dict(c["by_license"]),
        }
    return stage.finish(summary, dtype=dtype.str, vocab_size=tok.get_vocab_size())
