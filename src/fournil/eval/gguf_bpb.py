"""What quantisation costs: held-out bits-per-byte of GGUF files run by llama.cpp, next to the
full-precision model they were exported from.

The GGUF model is wrapped as a module that returns logits like ours, so `bits_per_byte`
scores it: same held-out windows, same byte counts, same special-token rule. Only the
engine computing the logits differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fournil.core.cores import available_cores
from fournil.eval.bpb import HeldOut, bits_per_byte
from fournil.model.transformer import Transformer
from fournil.tokenizer.train import load_tokenizer, token_byte_lengths


def default_threads() -> int:
    """Half the cores this process may use (one per physical core), for prompt batches too.
    llama-cpp-python's defaults put batches on every core and count the host's cores, not
    the process's; llama.cpp's workers spin while they wait, so on a busy or shared machine
    too many threads run many times slower (a hundredfold measured on 2 busy cores)."""
    return max(1, available_cores() // 2)


class LlamaCppLogits(nn.Module):
    """A GGUF file under llama.cpp, called like our model: `lm(x)` maps token ids [B, T] to
    next-token logits [B, T, vocab] (float32). Each row is evaluated from an empty KV cache,
    so rows are independent windows, as in a batched forward pass."""

    def __init__(self, path: str | Path, n_ctx: int, n_threads: int | None = None) -> None:
        super().__init__()
        try:  # an optional dependency: only running GGUF files needs it
            from llama_cpp import Llama
        except ImportError as e:
            raise ModuleNotFoundError("running GGUF files needs llama-cpp-python: pip install "
                                      "llama-cpp-python (pip install -e '.[llama]')") from e

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        n_threads = n_threads or default_threads()
        # One batch holds a whole window, and every position's logits are kept.
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                         logits_all=True, n_threads=n_threads, n_threads_batch=n_threads,
                         verbose=False)
        self.n_ctx = n_ctx

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = []
        for ids in input_ids.tolist():
            if len(ids) > self.n_ctx:
                raise ValueError(f"window of {len(ids)} tokens exceeds n_ctx={self.n_ctx}")
            self.llm.reset()
            self.llm.eval(ids)
            rows.append(torch.from_numpy(np.array(self.llm.scores[:len(ids)], copy=True)))
        return torch.stack(rows)

    def close(self) -> None:
        self.llm.close()


def gguf_bpb(model_dir: str | Path, gguf_paths: list[str | Path], tokens_dir: str | Path,
             seq_len: int, max_tokens_per_source: int, device: str | torch.device = "cpu",
             n_threads: int | None = None) -> list[dict]:
    """Bits-per-byte on the held-out split of `tokens_dir`: first of the full-precision model
    in `model_dir` (PyTorch, float32), then of each GGUF file (llama.cpp). Each row is
    `{"model", "engine", "bpb", "delta_bpb", "result"}` (`result` is `bits_per_byte`'s, with
    per-source figures); `delta_bpb` is against the first row."""
    model_dir = Path(model_dir)
    token_bytes = token_byte_lengths(load_tokenizer(model_dir))
    held_out = HeldOut(Path(tokens_dir) / "val", max_tokens_per_source)
    if not held_out.tokens:
        raise ValueError(f"{tokens_dir}/val: no held-out tokens to evaluate on")

    model = Transformer.load(model_dir, device=device, dtype=torch.float32)
    rows = [("PyTorch float32", model_dir, bits_per_byte(model, held_out, token_bytes, seq_len,
                                                         device=device))]
    for path in gguf_paths:
        lm = LlamaCppLogits(path, n_ctx=seq_len, n_threads=n_threads)
        if (n_vocab := lm.llm.n_vocab()) != model.config.vocab_size:
            lm.close()
            raise ValueError(f"{path}: {n_vocab} tokens, but {model_dir} has "
                             f"{model.config.vocab_size}: not an export of this model")
        # llama.cpp takes one window at a time; batch_size only sets how many are stacked
        rows.append(("llama.cpp", Path(path),
                     bits_per_byte(lm, held_out, token_bytes, seq_len, batch_size=4)))
        lm.close()  # frees the llama.cpp model before the next file is loaded
    base = rows[0][2]["bpb"]
    return [{"model": str(where), "engine": engine, "bpb": result["bpb"],
             "delta_bpb": result["bpb"] - base, "result": result}
            for engine, where, result in rows]


def format_table(rows: list[dict]) -> str:
    """The rows of `gguf_bpb` as an aligned text table, the difference also in percent."""
    width = max(len(r["model"]) for r in rows)
    lines = [f"{'model':<{width}}  {'engine':<15}  {'bpb':>7}  {'Δ bpb':>9}  {'Δ %':>8}"]
    base = rows[0]["bpb"]
    for i, r in enumerate(rows):
        delta = "" if i == 0 else f"{r['delta_bpb']:+9.5f}  {100 * r['delta_bpb'] / base:+7.3f}%"
        lines.append(f"{r['model']:<{width}}  {r['engine']:<15}  {r['bpb']:7.4f}  {delta}")
    return "\n".join(lines)
