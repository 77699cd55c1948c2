"""AdamW with weight decay on matrices only (not on norms), the usual GPT recipe."""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor


def fused_kernel(param: torch.Tensor) -> bool:
    """Whether to use torch's fused AdamW kernel (one pass over each parameter instead of a
    dozen elementwise ops): on CPU and CUDA, not on FSDP's sharded DTensors."""
    return param.device.type in ("cpu", "cuda") and not isinstance(param, DTensor)


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float,
               betas: tuple[float, float]) -> torch.optim.AdamW:
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # tied once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = fused_kernel(next(iter(params)))
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
