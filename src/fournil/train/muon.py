"""Muon for the hidden matrices, AdamW for everything else: the modded-nanogpt / nanochat split.

Muon (Keller Jordan, 2024) replaces each 2-D weight's momentum update by its nearest
semi-orthogonal matrix, computed with a few Newton–Schulz iterations, so every direction of the
matrix moves at the same rate. It only makes sense for the matrices inside the blocks (attention
q/k/v/o, MLP gate/up/down): embeddings and the LM head are lookups/readouts rather than linear
maps between hidden spaces, and norms are vectors, so those stay on AdamW. A tied embedding is
one parameter and goes to AdamW.

On CUDA we use `torch.optim.Muon` (torch >= 2.9). Elsewhere, and on an older torch,
`ReferenceMuon` below does the same math step for step with the same state layout (so an
optimizer state moves between the two, CPU run to GPU run), except that off CUDA it iterates
in float32: torch's Muon always iterates in bf16, which CPUs multiply 10-70x slower than
float32 (a 256x256 Newton–Schulz: 470 ms in bf16, 15 ms in float32, one thread). The math,
per matrix W of shape [A, B] with gradient G:

    M  <- mu * M + (1 - mu) * G                          (momentum as an EMA)
    U  <- (1 - mu) * G + mu * M   if nesterov, else M
    O  <- NewtonSchulz5(U / ||U||_F), coefficients (3.4445, -4.7750, 2.0315)
    W  <- W * (1 - lr * weight_decay) - lr * scale(A, B) * O

where scale is Keller's sqrt(max(1, A / B)) ("original", torch's default) or Moonshot's
0.2 * sqrt(max(A, B)) ("match_rms_adamw", which lets Muon reuse an AdamW learning rate).

Under FSDP2 each rank holds a slice of rows of W, G and M (DTensors). Newton–Schulz needs the
whole matrix, so `ReferenceMuon` gathers U, orthogonalises it on every rank (the same result
everywhere) and applies its own rows; `make_optimizer` picks it over torch's Muon for sharded
parameters. The momentum stays sharded.

Every param group carries `initial_lr`, its base learning rate; the trainer sets
`group["lr"] = group["initial_lr"] * schedule(step)` (see `apply_lr_multiplier`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from fournil.train.config import NS_STEPS, OptimizerConfig
from fournil.train.optim import fused_kernel, make_adamw

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


# -- the reference Muon, for CPUs and torch < 2.9 ----------------------------------------------

def newton_schulz(g: torch.Tensor, steps: int = NS_STEPS,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                  eps: float = NS_EPS) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with g's singular vectors (singular values land
    in roughly [0.7, 1.2] rather than exactly 1, which trains just as well and takes 5 steps).
    In bf16 on CUDA, exactly as torch.optim.Muon (the iteration tolerates the rounding), in
    float32 elsewhere, where bf16 matrix products are slow."""
    a, b, c = coefficients
    x = g.bfloat16() if g.is_cuda else g.float()
    wide = g.size(0) > g.size(1)  # iterate on the smaller Gram matrix
    if wide:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # Frobenius norm >= spectral norm: singular values <= 1
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b*A + c*A^2
        x = torch.addmm(x, poly, x, beta=a)  # a*X + (b*A + c*A^2) X
    return x.T if wide else x


def orthogonalise(update: torch.Tensor, steps: int = NS_STEPS,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                  eps: float = NS_EPS) -> torch.Tensor:
    """`newton_schulz` of a whole matrix; of a sharded one (FSDP2's DTensor), gathered first,
    then cut back to this rank's shard (every rank computes the same full result, so cutting
    needs no communication)."""
    if not isinstance(update, DTensor):
        return newton_schulz(update, steps, coefficients, eps)
    full = newton_schulz(update.full_tensor(), steps, coefficients, eps)
    return distribute_tensor(full, update.device_mesh, update.placements, src_data_rank=None)


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1.0, rows / cols))


class ReferenceMuon(torch.optim.Optimizer):
    """torch.optim.Muon's update and state layout (`momentum_buffer`); float32 off CUDA."""

    def __init__(self, params: Iterable, lr: float = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True,
                 ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 eps: float = NS_EPS, ns_steps: int = NS_STEPS,
                 adjust_lr_fn: str | None = None) -> None:
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                    "nesterov": nesterov, "ns_coefficients": ns_coefficients, "eps": eps,
                    "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon only takes 2-D parameters, got one of shape "
                                     f"{tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)
                update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
                update = orthogonalise(update, group["ns_steps"], group["ns_coefficients"],
                                       group["eps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


def muon_class(on_cuda: bool) -> type[torch.optim.Optimizer]:
    """torch's Muon where it exists and runs fast (CUDA), ours elsewhere."""
    return getattr(torch.optim, "Muon", ReferenceMuon) if on_cuda else ReferenceMuon


# -- the split ---------------------------------------------------------------------------------

def split_parameters(modules: Iterable[nn.Module]) -> tuple[list[nn.Parameter],
                                                            list[nn.Parameter],
                                                            list[nn.Parameter]]:
    """(muon, adamw with decay, adamw without decay), each parameter once (a tied embedding is
    one parameter). Muon gets every 2-D weight except embeddings and the LM head; the decayed
    AdamW group is embeddings and head; norms (1-D) are undecayed."""
    readout: set[int] = set()  # embedding tables and output heads, even when 2-D
    params: dict[int, nn.Parameter] = {}  # by identity, in order: tied weights once
    for module in modules:
        for name, sub in module.named_modules():
            if isinstance(sub, nn.Embedding) or name.split(".")[-1] == "lm_head":
                readout.update(id(p) for p in sub.parameters())
        params.update((id(p), p) for p in module.parameters() if p.requires_grad)
    muon, decay, no_decay = [], [], []
    for key, p in params.items():
        if p.ndim == 2 and key not in readout:
            muon.append(p)
        elif p.ndim >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    return muon, decay, no_decay


class MuonAdamW:
    """Muon and AdamW stepped together, behaving like one optimizer for the trainer:
    `param_groups` lists both optimizers' groups (the same dicts, so setting `lr` on them
    works), and `state_dict()` holds both states."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError(f"not a Muon + AdamW optimizer state (keys {sorted(state)}); "
                             "was the checkpoint trained with optimizer.name = 'adamw'?")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def make_optimizer(model: nn.Module | Iterable[nn.Module], cfg: OptimizerConfig
                   ) -> torch.optim.AdamW | MuonAdamW:
    """The recipe's optimizer over `model` (and any extra training modules, such as MTP heads,
    passed alongside it in a list). Every group carries `initial_lr`."""
    modules = [model] if isinstance(model, nn.Module) else list(model)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.name == "adamw":
        optimizer = make_adamw(nn.ModuleList(modules), cfg.lr, cfg.weight_decay, betas)
        for group in optimizer.param_groups:
            group["initial_lr"] = cfg.lr
        return optimizer
    if cfg.name != "muon":
        raise ValueError(f"unknown optimizer {cfg.name!r} (adamw or muon)")
    matrices, decay, no_decay = split_parameters(modules)
    if not matrices:
        raise ValueError("optimizer 'muon': the model has no hidden 2-D matrices")
    # torch's Muon would run Newton–Schulz on FSDP's shards through DTensor ops; ours gathers
    muon_type = muon_class(matrices[0].is_cuda and not isinstance(matrices[0], DTensor))
    muon = muon_type([{"params": matrices, "initial_lr": cfg.muon_lr}], lr=cfg.muon_lr,
                     weight_decay=cfg.muon_weight_decay, momentum=cfg.muon_momentum,
                     nesterov=cfg.muon_nesterov, ns_steps=cfg.muon_ns_steps,
                     adjust_lr_fn=cfg.muon_adjust_lr)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "initial_lr": cfg.lr},
              {"params": no_decay, "weight_decay": 0.0, "initial_lr": cfg.lr}]
    adamw = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=betas,
                              fused=fused_kernel(matrices[0]))
    return MuonAdamW(muon, adamw)


def apply_lr_multiplier(optimizer: torch.optim.Optimizer | MuonAdamW, multiplier: float) -> None:
    """Sets each group's lr to its base lr times the schedule's multiplier."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier
