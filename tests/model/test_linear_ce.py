"""The fused head + cross-entropy gives F.cross_entropy's loss and gradients."""

import pytest
import torch
import torch.nn.functional as F

from fournil.model import linear_ce
from fournil.model.linear_ce import linear_cross_entropy


def reference(hidden, weight, targets, reduction="mean"):
    logits = hidden @ weight.t()
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=-100,
                           reduction=reduction)


def grads(fn, hidden, weight, targets, **kw):
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    loss = fn(hidden, weight, targets, **kw)
    (loss * 1.7).backward()  # a non-unit upstream gradient must be carried through
    return loss.detach(), hidden.grad, weight.grad


@pytest.mark.parametrize("chunk", [1 << 6, 1 << 20])  # many chunks (ragged last one), one chunk
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_cross_entropy(monkeypatch, chunk, reduction):
    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    hidden, weight = torch.randn(3, 7, 16), torch.randn(40, 16) * 0.3
    targets = torch.randint(0, 40, (3, 7))
    targets[0, :3] = -100
    targets[2, 6] = -100
    ours = grads(linear_cross_entropy, hidden, weight, targets, reduction=reduction)
    theirs = grads(reference, hidden, weight, targets, reduction=reduction)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_all_targets_ignored_gives_zero_loss_and_gradients():
    hidden, weight = torch.randn(2, 5, 8, requires_grad=True), torch.randn(11, 8,
                                                                           requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.full((2, 5), -100))
    loss.backward()
    assert loss.item() == 0.0
    assert hidden.grad.abs().max() == 0 and weight.grad.abs().max() == 0


def test_tied_weight_gets_both_gradients():
    """With the head tied to the embedding, the shared weight's gradient is the sum of the
    embedding's and the head's, as with nn.Linear + F.cross_entropy."""
    torch.manual_seed(1)
    ids, targets = torch.randint(0, 30, (2, 6)), torch.randint(0, 30, (2, 6))
    initial, results = torch.randn(30, 12) * 0.2, []
    for fn in (linear_cross_entropy, reference):
        table = torch.nn.Parameter(initial.clone())
        hidden = torch.tanh(F.embedding(ids, table))
        fn(hidden, table, targets).backward()
        results.append(table.grad)
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-5)


def test_bf16_autocast_close_to_nn_linear():
    """Under autocast the matmuls run in bf16 as nn.Linear's would; the loss stays fp32."""
    torch.manual_seed(2)
    hidden, targets = torch.randn(64, 32), torch.randint(0, 100, (64,))
    head = torch.nn.Linear(32, 100, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, head.weight, targets)
        theirs = F.cross_entropy(head(hidden).float(), targets)
    assert ours.dtype == torch.float32
    assert abs(ours.item() - theirs.item()) < 1e-2


def test_without_gradients_only_the_loss():
    hidden, weight = torch.randn(4, 8), torch.randn(9, 8)
    targets = torch.randint(0, 9, (4,))
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets)
    torch.testing.assert_close(loss, reference(hidden, weight, targets))


def test_bad_reduction_is_an_error():
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(torch.randn(2, 4), torch.randn(3, 4), torch.zeros(2).long(), "none")
