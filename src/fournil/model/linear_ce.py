"""The LM head and its cross-entropy as one step, walking the tokens in chunks.

A small model's largest activation is its logits, [tokens, vocab]: 2,048 tokens x 8,192
entries is 64 MB in fp32 for a 4M-parameter model. `F.cross_entropy(head(h))` passes over
them five times or so (log_softmax forward and its saved output, a zero-filled gradient,
log_softmax backward), each time from main memory. Here the head's matmul and the loss are
one autograd function that takes the tokens a chunk at a time: a chunk's logits are turned
into their gradient (softmax - one-hot) in place while they are still in cache, then
multiplied straight into the hidden-state and weight gradients. The gradients are thus
computed in the forward pass and backward only scales them, the approach of Liger Kernel's
fused linear cross-entropy. Logits are never kept, so activation memory no longer grows with
the vocabulary either.

Used where a loss needs no logits afterwards: pretraining CE, MTP depths, SFT. Evaluation and
distillation, which read the logits, keep `F.cross_entropy`.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
CHUNK_ELEMENTS = 1 << 21  # logits per chunk: 8 MB in fp32, near the last-level cache


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The matmul dtype nn.Linear would use here: autocast's, when it is on."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                dtype: torch.dtype, sum_reduction: bool) -> torch.Tensor:
        h = hidden.reshape(-1, hidden.size(-1))
        y = targets.reshape(-1)
        w = weight.to(dtype)
        grad_h = torch.empty_like(h, dtype=torch.float32) if hidden.requires_grad else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        # a tensor, not a Python int: no host sync, and no graph break under torch.compile
        count = (y != IGNORE_INDEX).sum().clamp(min=1).float()
        rows = max(1, CHUNK_ELEMENTS // weight.size(0))
        for start in range(0, h.size(0), rows):
            h_chunk, y_chunk = h[start:start + rows].to(dtype), y[start:start + rows]
            logits = (h_chunk @ w.t()).float()
            keep = y_chunk != IGNORE_INDEX
            safe = torch.where(keep, y_chunk, 0)
            target_logit = logits.gather(1, safe[:, None]).squeeze(1)
            # one exp per logit: e = exp(logits - max) in place, whose row sums give the
            # log-sum-exp and whose normalisation is the softmax
            row_max = logits.amax(dim=-1, keepdim=True)
            exp = logits.sub_(row_max).exp_()
            sums = exp.sum(dim=-1)
            lse = row_max.squeeze(1) + sums.log()
            total += ((lse - target_logit) * keep).sum()
            if grad_h is None and grad_w is None:
                continue
            # d(sum of losses)/d(logits) = softmax - one-hot, and 0 on ignored rows
            grad = exp.div_(sums[:, None])
            grad.scatter_add_(1, safe[:, None], -keep[:, None].to(grad.dtype))
            if torch.compiler.is_compiling() or not bool(keep.all()):
                grad.masked_fill_(~keep[:, None], 0.0)
            grad = grad.to(dtype)
            if grad_h is not None:
                grad_h[start:start + rows] = grad @ w
            if grad_w is not None and grad.dtype == grad_w.dtype:
                grad_w.addmm_(grad.t(), h_chunk)  # BLAS adds into grad_w itself: no temporary
            elif grad_w is not None:
                grad_w += grad.t() @ h_chunk  # a low-precision matmul, accumulated in fp32
        scale = torch.ones_like(count) if sum_reduction else 1.0 / count
        ctx.scale = scale
        ctx.save_for_backward(grad_h if grad_h is not None else torch.empty(0),
                              grad_w if grad_w is not None else torch.empty(0))
        ctx.shapes = (hidden.shape, hidden.dtype, weight.dtype)
        return total * scale

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        shape, h_dtype, w_dtype = ctx.shapes
        g = grad_output.float() * ctx.scale
        d_hidden = (grad_h * g).to(h_dtype).view(shape) if ctx.needs_input_grad[0] else None
        d_weight = (grad_w * g).to(w_dtype) if ctx.needs_input_grad[1] else None
        return d_hidden, d_weight, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         reduction: str = "mean") -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets): hidden [..., d], weight [vocab, d], targets
    [...] with -100 ignored; "mean" over the kept targets (0 when there are none) or "sum".
    Computed in fp32 from the matmul's output, which runs in autocast's dtype when it is on."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    dtype = _compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, targets, dtype, reduction == "sum")
