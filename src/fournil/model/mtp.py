"""Multi-token prediction (DeepSeek-V3, section 2.2): an auxiliary loss for training only.

Depth k (1..D) predicts the token k+1 positions ahead, sequentially: it takes the previous
depth's hidden state at position t (depth 0 is the main model's) and the embedding of token t+k,

    h^k_t = Block_k( W_k [ RMSNorm(h^{k-1}_t) ; RMSNorm(emb(x_{t+k})) ] )
    p(x_{t+k+1}) = softmax( lm_head( RMSNorm(h^k_t) ) )

with the main model's embedding table and LM head (shared, not copied). The extra depth makes
each hidden state plan further ahead, which densifies the training signal.

The heads live outside `Transformer`: the trainer holds them next to the model and checkpoints
them in their own file (`mtp.safetensors`), so the model's `state_dict`, its checkpoints and
its exports are exactly Qwen3's and never contain them. Under DDP/FSDP, wrap model and heads
in one module whose forward returns the summed loss, since the heads use the model's embedding
and head outside the model's own forward.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fournil.model.config import TransformerConfig
from fournil.model.linear_ce import linear_cross_entropy
from fournil.model.transformer import Block, RMSNorm, Transformer, init_parameters

FILENAME = "mtp.safetensors"


class MTPDepth(nn.Module):
    """One prediction depth: the two norms, the projection and a transformer block."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.hidden_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.embed_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.block = Block(cfg, layer=0)  # the layer index is a KV-cache slot, unused here
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)  # before the shared head

    def forward(self, hidden: torch.Tensor, embedded: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        x = self.proj(torch.cat([self.hidden_norm(hidden), self.embed_norm(embedded)], dim=-1))
        return self.block(x, cos, sin)


class MTPHeads(nn.Module):
    def __init__(self, cfg: TransformerConfig, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"MTP depth must be >= 1, got {depth}")
        self.config = cfg
        self.depths = nn.ModuleList(MTPDepth(cfg) for _ in range(depth))
        self.init_weights()

    def init_weights(self) -> None:
        """The main model's init (`Transformer.init_weights`): normal(0, 0.02), residual
        projections scaled down by depth, norms at one."""
        init_parameters(self, self.config.num_layers)

    def forward(self, model: Transformer, hidden: torch.Tensor, input_ids: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        """The auxiliary loss: cross-entropy averaged over depths. `hidden` is the main model's
        `hidden_states(input_ids)` [B, T, H]; `targets` its next-token targets [B, T] (-100 =
        ignored), so the target of depth k at position t is `targets[:, t + k]`."""
        T = input_ids.size(1)
        if T <= len(self.depths):
            raise ValueError(f"MTP depth {len(self.depths)} needs sequences longer than "
                             f"{len(self.depths)} tokens, got {T}")
        losses = []
        for k, depth in enumerate(self.depths, start=1):
            n = T - k  # positions that still have a token k+1 ahead
            embedded = model.model.embed_tokens(input_ids[:, k:])
            hidden = depth(hidden[:, :n], embedded, model.rope_cos[:n], model.rope_sin[:n])
            losses.append(linear_cross_entropy(depth.norm(hidden), model.lm_head.weight,
                                               targets[:, k:]))
        return torch.stack(losses).mean()

    def save(self, directory: str | Path) -> Path:
        """`mtp.safetensors` in a checkpoint folder, written atomically."""
        path = Path(directory) / FILENAME
        tmp = path.with_name(path.name + ".tmp")
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(tmp), metadata={"format": "pt", "depth": str(len(self.depths))})
        os.replace(tmp, path)
        return path

    def load(self, directory: str | Path) -> None:
        """Loads `mtp.safetensors` from a checkpoint folder, with strict key and shape checks."""
        path = Path(directory) / FILENAME
        if not path.exists():
            raise FileNotFoundError(f"{path}: no MTP weights (was the run trained without MTP?)")
        state = load_file(str(path), device=str(next(self.parameters()).device))
        mine = self.state_dict()
        if set(state) != set(mine):
            raise ValueError(f"{path}: MTP weights for another depth or model: "
                             f"missing {sorted(set(mine) - set(state))[:4]}, "
                             f"unexpected {sorted(set(state) - set(mine))[:4]}")
        for name, tensor in state.items():
            if tensor.shape != mine[name].shape:
                raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(mine[name].shape)}")
        self.load_state_dict(state)
