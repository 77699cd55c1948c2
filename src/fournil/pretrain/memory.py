"""How much accelerator memory a pretraining recipe needs, estimated before renting a GPU.

Parameters are counted exactly (the model is built on the meta device: no memory, no
time). The rest follows the usual accounting for mixed-precision training with fp32 master
weights: weights 4 bytes, gradients 4, optimizer state 8 per AdamW parameter (two moments)
and 4 per Muon parameter (one momentum), MTP heads included. Activations kept for the
backward pass, per layer and token, in bf16, with SDPA's fused attention (no T x T score
matrix), following Korthikanti et al. (2022) adapted to SwiGLU and grouped-query attention:

    attention: the block input, its norm, q, k, v, the attention output -> (4h + 2 kv) * 2 B
    MLP:       input norm, gate, up, their product, SiLU input           -> (h + 3 ff) * 2 B
    residual and norm statistics                                          -> ~2h * 2 B

plus the logits of one micro-batch in bf16 and their float32 log-softmax for the loss. It is
an estimate (allocator fragmentation, workspace and torch.compile's buffers come on top);
`headroom` reserves 10% for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fournil.model.config import TransformerConfig
from fournil.model.mtp import MTPHeads
from fournil.model.transformer import Transformer
from fournil.pretrain.config import PretrainConfig
from fournil.train.muon import split_parameters

GIB = 1 << 30


@dataclass
class MemoryEstimate:
    parameters: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    logits_gib: float
    headroom: float = 0.10

    @property
    def total_gib(self) -> float:
        parts = (self.weights_gib + self.gradients_gib + self.optimizer_gib
                 + self.activations_gib + self.logits_gib)
        return parts * (1 + self.headroom)

    def table(self) -> str:
        rows = [("parameters", f"{self.parameters / 1e6:,.1f} M"),
                ("weights (fp32)", f"{self.weights_gib:.1f} GiB"),
                ("gradients (fp32)", f"{self.gradients_gib:.1f} GiB"),
                ("optimizer state", f"{self.optimizer_gib:.1f} GiB"),
                ("activations (bf16)", f"{self.activations_gib:.1f} GiB"),
                ("logits + loss", f"{self.logits_gib:.1f} GiB"),
                (f"total (+{self.headroom:.0%})", f"{self.total_gib:.1f} GiB")]
        return "\n".join(f"{name:<20} {value:>12}" for name, value in rows)


def estimate_memory(model_cfg: TransformerConfig, cfg: PretrainConfig, vocab_size: int
                    ) -> MemoryEstimate:
    """Peak memory of one training process with the whole model (no FSDP sharding)."""
    config = model_cfg.with_vocab(vocab_size)
    with torch.device("meta"):
        modules = [Transformer(config)]
        if cfg.mtp.depth:
            modules.append(MTPHeads(config, cfg.mtp.depth))
    muon, decay, no_decay = split_parameters(modules)
    n_muon = sum(p.numel() for p in muon)
    n_all = n_muon + sum(p.numel() for p in decay + no_decay)
    if cfg.optimizer.name == "adamw":
        optimizer_bytes = 8 * n_all
    else:
        optimizer_bytes = 4 * n_muon + 8 * (n_all - n_muon)
    h, ff = config.hidden_size, config.intermediate_size
    q = config.num_heads * config.head_dim
    kv = config.num_kv_heads * config.head_dim
    per_token_layer = 2 * ((3 * h + q + 2 * kv + q) + (h + 3 * ff) + 2 * h)
    tokens = cfg.batch_size * cfg.seq_len
    layers = config.num_layers + cfg.mtp.depth
    logits_bytes = tokens * vocab_size * (2 + 4 + 4)  # bf16 logits, fp32 log-softmax and grad
    return MemoryEstimate(
        parameters=n_all, weights_gib=4 * n_all / GIB, gradients_gib=4 * n_all / GIB,
        optimizer_gib=optimizer_bytes / GIB,
        activations_gib=per_token_layer * tokens * layers / GIB,
        logits_gib=logits_bytes / GIB)
