"""Training on several processes under `torchrun`: DDP or FSDP2, one data order for any count.

    torchrun --nproc_per_node 2 -m fournil pretrain ...       # 2 CPU processes (gloo)
    torchrun --nproc_per_node 8 -m fournil pretrain ...       # 8 GPUs (NCCL)

`init_world` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK; none set: one process
and no process group). The recipe's batch is global: `batch_size * grad_accum` sequences per
optimizer step, and step s trains on the global samples [s*G, (s+1)*G) whatever the world
size, each rank running `grad_accum / world_size` of the micro-batches (`micro_batch_starts`).
With gradients averaged over ranks, a step is the same sum at any world size, up to float
reduction order, so a run stopped on 2 processes continues on 1 (or 8) with the same tokens.

The module trained is the objective (model + MTP heads, one forward returning the loss):

- `ddp`: every rank holds the whole model; gradients are all-reduced once per step (the
  micro-batches before the last run under `no_sync`).
- `fsdp`: `fully_shard` on every transformer block, then on the objective (embeddings, head,
  final norm, MTP projections): each rank keeps 1/W of every parameter, gradient and
  optimizer state, and gathers a block's weights just for its forward and backward. On GPUs
  parameters are gathered in bf16 and gradients reduced in fp32.

Checkpoints stay world-size independent: full, unsharded weights and a full optimizer state
keyed by parameter name (`FullOptimizerState`), gathered to rank 0, which alone writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from fournil.core.device import pick_device
from fournil.core.validation import RecipeError
from fournil.model.transformer import Block
from fournil.train.muon import MuonAdamW

PARALLEL = ("ddp", "fsdp")
# gathered whole on rank 0 (the only writer), in CPU memory so a model too large for one GPU
# can still be checkpointed
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, writes metrics, checkpoints and the manifest."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of `values` over ranks (the tensor itself on one process)."""
        if self.size == 1:
            return values
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.size


@contextmanager
def init_world(device: str = "auto") -> Iterator[World]:
    """The world torchrun started this process in, with its process group (gloo on CPU, NCCL on
    CUDA) for the duration of the block. Without torchrun's variables: one process, no group.
    A group the caller already initialised is used and left alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        yield World(device=pick_device(device))
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    elif chosen.type != "cpu":
        raise RecipeError(f"pretrain.device: {chosen.type} cannot train on several processes "
                          "(torchrun needs cpu or cuda)")
    owner = not dist.is_initialized()
    if owner:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo",
                                device_id=chosen if chosen.type == "cuda" else None)
    try:
        yield World(rank=rank, local_rank=local_rank, size=size, device=chosen)
    finally:
        if owner:
            dist.destroy_process_group()


# -- which samples each rank trains on ---------------------------------------------------------

def local_grad_accum(grad_accum: int, world_size: int) -> int:
    """Micro-batches per rank per step: the recipe's `grad_accum` shared out evenly."""
    if grad_accum % world_size:
        raise RecipeError(f"pretrain.grad_accum: {grad_accum} micro-batches per step cannot be "
                          f"shared evenly by {world_size} processes; make it a multiple of "
                          f"{world_size} (the global batch is batch_size * grad_accum)")
    return grad_accum // world_size


def micro_batch_starts(step: int, batch_size: int, grad_accum: int, rank: int = 0,
                       world_size: int = 1) -> list[int]:
    """The first global sample index of each micro-batch `rank` runs at `step`.

    Step s covers samples [s*G, (s+1)*G) with G = batch_size * grad_accum: micro-batch m holds
    the batch_size samples from s*G + m*batch_size on. Rank r runs the contiguous micro-batches
    [r*k, (r+1)*k), k = grad_accum / world_size. A sampler maps each index to a window (see
    `WindowSampler.start`), so this is the only place where ranks and samples meet."""
    k = local_grad_accum(grad_accum, world_size)
    first = step * batch_size * grad_accum
    return [first + m * batch_size for m in range(rank * k, (rank + 1) * k)]


# -- wrapping the objective --------------------------------------------------------------------

def wrap(objective: nn.Module, parallel: str, world: World, bf16: bool = False) -> nn.Module:
    """The objective ready to train on `world`: itself on one process, in DDP, or sharded in
    place by FSDP2 (`fully_shard` per transformer block, then the root). `bf16` (FSDP only):
    gather parameters in bf16 and reduce gradients in fp32; DDP relies on autocast instead."""
    if parallel not in PARALLEL:
        raise RecipeError(f"pretrain.parallel: ddp or fsdp, got {parallel!r}")
    if world.size == 1:
        return objective
    if parallel == "ddp":
        return DistributedDataParallel(
            objective, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(world.device.type, (world.size,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if bf16 else MixedPrecisionPolicy())
    # Blocks only, not the MTP depths around them: the heads call their own norms (and the
    # model's embedding and head) outside any one block's forward, so those must stay with
    # the root, which is gathered for the whole forward.
    for module in objective.modules():
        if isinstance(module, Block):
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(objective, mesh=mesh, mp_policy=policy)
    return objective


def gradient_sync(wrapped: nn.Module, enabled: bool) -> AbstractContextManager:
    """A context for one micro-batch's forward and backward. Under DDP, gradients of all but
    the last micro-batch of a step accumulate locally (`no_sync`) and are all-reduced once.
    FSDP2 reduce-scatters every micro-batch: skipping it would keep full unsharded gradients
    (in bf16 on GPUs) on every rank, which is the memory FSDP is there to save."""
    if isinstance(wrapped, DistributedDataParallel) and not enabled:
        return wrapped.no_sync()
    return nullcontext()


@contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """Full root parameters for a forward that does not go through the root (the evaluation
    calls the model inside the objective). Blocks gather their own. No-op unless FSDP."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def clip_grad_norm(parameters: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clips the global gradient norm and returns it (before clipping). DDP gradients are
    already the same on every rank; FSDP gradients are sharded DTensors, whose norm torch
    reduces over ranks to a replicated DTensor, returned here as a plain tensor."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


# -- world-size-independent checkpoints --------------------------------------------------------

def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s full state dict on CPU on rank 0 (empty elsewhere). Collective: every rank
    calls it."""
    return get_model_state_dict(module, options=FULL)


class FullOptimizerState:
    """The optimizer state the way `torch.distributed.checkpoint` writes it in full: every
    tensor whole, keyed by parameter name (`model.model.layers.0.mlp.up_proj.weight`), so the
    same file resumes a run on one process, under DDP or under FSDP at any world size.

    Stands where checkpoint.py expects an optimizer: `state_dict()` (collective; the full state
    on rank 0, empty elsewhere) and `load_state_dict(full state)` on every rank."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer | MuonAdamW) -> None:
        self.module = module  # the objective itself, not its DDP wrapper
        self.optimizers = ((optimizer.muon, optimizer.adamw) if isinstance(optimizer, MuonAdamW)
                           else (optimizer,))

    def state_dict(self) -> dict:
        return get_optimizer_state_dict(self.module, self.optimizers, options=FULL)

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"state", "param_groups"} or (
                state["state"] and not isinstance(next(iter(state["state"])), str)):
            raise ValueError("optimizer.pt: not an optimizer state keyed by parameter name "
                             f"(keys {sorted(state)[:4]}); it predates multi-process training")
        set_optimizer_state_dict(self.module, self.optimizers, state,
                                 options=StateDictOptions(full_state_dict=True))


class Snapshot:
    """A state dict already gathered (a collective every rank took part in), handed to the
    rank-0 code that saves it by calling `.state_dict()`."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def state_dict(self) -> dict:
        return self.state
