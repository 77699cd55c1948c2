"""The eval stage: held-out bits-per-byte of a model, overall and per source, and per language
when given the curate stage the tokens were made from (its `lang` column).

Task evaluations (multiple choice, OCR, cited RAG) and comparisons of several models are
`fournil.eval.tasks`; this stage is the one number every bake records.
"""

from __future__ import annotations

from pathlib import Path

from fournil.core.device import autocast_for, pick_device
from fournil.core.stage import Stage, hash_files, upstream_hash
from fournil.eval.bpb import HeldOut, bits_per_byte, document_languages
from fournil.model.transformer import Transformer
from fournil.tokenizer.train import load_tokenizer, token_byte_lengths


def model_fingerprint(model_dir: Path) -> str:
    return hash_files([p for p in Path(model_dir).iterdir()
                       if p.name in ("model.safetensors", "config.json", "tokenizer.json")])


def run_eval(model_dir: Path, tokens_dir: Path, out_dir: Path, seq_len: int,
             max_tokens_per_source: int, batch_size: int = 8, device: str = "auto",
             curate_dir: Path | None = None) -> dict:
    """The manifest's `bpb` has `by_source`, and `by_language` when `curate_dir` is given
    (each language capped at `max_tokens_per_source` too)."""
    inputs = {"model": model_fingerprint(model_dir), "tokens": upstream_hash(tokens_dir)}
    if curate_dir is not None:
        inputs["curate"] = upstream_hash(curate_dir)
    stage = Stage("eval", out_dir, inputs=inputs,
                  params={"seq_len": seq_len, "max_tokens_per_source": max_tokens_per_source,
                          "model_dir": str(model_dir)})
    if manifest := stage.done():
        return manifest
    stage.start()
    torch_device = pick_device(device)
    model = Transformer.load(model_dir, device=torch_device)
    token_bytes = token_byte_lengths(load_tokenizer(model_dir))
    held_out = HeldOut(Path(tokens_dir) / "val", max_tokens_per_source)
    result = bits_per_byte(model, held_out, token_bytes, seq_len, batch_size, torch_device,
                           autocast_for(torch_device))
    if curate_dir is not None:
        by_language = HeldOut(Path(tokens_dir) / "val", max_tokens_per_source,
                              group_of=document_languages(curate_dir))
        result["by_language"] = bits_per_byte(model, by_language, token_bytes, seq_len,
                                              batch_size, torch_device,
                                              autocast_for(torch_device))["by_source"]
    return stage.finish({"val_bpb": result["bpb"], "val_loss": result["loss"],
                         "tokens": result["tokens"], "bytes": result["bytes"]},
                        bpb=result)
