"""The SFT loss computed only where it counts (the head on the targets' positions, the rows
cut after the batch's last target) gives the loss and the gradients of the head over every
position of the full rows: real chats of the real tokenizer, packed with their padding, on a
real 2-layer model, full and with LoRA adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fournil.formats.chatml import ChatEncoder
from fournil.model.config import TransformerConfig
from fournil.model.transformer import Transformer
from fournil.sft.stage import sft_loss_sums, trim_dead_tail
from fournil.tokenizer.train import load_tokenizer
from fournil.train.chats import IGNORE, encode_chat, inputs_and_targets, pack
from fournil.train.config import LoRAConfig
from fournil.train.objective import kept_positions_loss

CONFIG = TransformerConfig(vocab_size=320, hidden_size=32, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=8, intermediate_size=64, max_seq_len=128)
CHATS = [("Corrige : Il étalt une fois une boulangère.", "Il était une fois une boulangère."),
         ("Corrige : les enfants du vil1age", "les enfants du village"),
         ("Que vendait-elle ?", "Des croissants encore tièdes, et du pain chaud."),
         ("Corrige : « Bonjour ! » disait-elIe.", "« Bonjour ! » disait-elle.")]
# The two computations differ only in the order of fp32 sums over at most a few hundred
# terms (chunks of the head, SDPA's tiles over a shorter row): a relative error of the order
# of n * 2**-24 < 1e-4 of the largest value compared.
RTOL = 1e-4


def rows(tokenizer_dir) -> tuple[np.ndarray, np.ndarray]:
    """Four packed rows of 80 + 1 tokens: whole chats, then padding (a dead tail)."""
    encoder = ChatEncoder(load_tokenizer(tokenizer_dir))
    encoded = [encode_chat(encoder, [{"role": "user", "content": q},
                                     {"role": "assistant", "content": a}]) for q, a in CHATS]
    packed = pack(encoded, seq_len=80, pad_id=encoder.bos)
    assert len(packed) == 4  # one chat per row, each row ending in padding
    return packed.ids, packed.mask


def model(lora: bool) -> Transformer:
    torch.manual_seed(0)
    m = Transformer(CONFIG)
    if lora:
        from fournil.train.lora import add_lora  # peft: the lora extra, in dev
        m = add_lora(m, LoRAConfig(rank=4, alpha=8))
        with torch.no_grad():  # B starts at 0: make the adapters do something
            for name, p in m.named_parameters():
                if ".lora_" in name:
                    p.normal_(0, 0.3)
    return m.train()


def loss_and_grads(m: Transformer, loss: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    m.zero_grad(set_to_none=True)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in m.named_parameters()
                         if p.requires_grad}


def assert_same(a: tuple[float, dict], b: tuple[float, dict]) -> None:
    assert a[0] == pytest.approx(b[0], rel=RTOL)
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        scale = float(b[1][name].abs().max())
        assert scale > 0, name  # every trained parameter gets a gradient here
        torch.testing.assert_close(a[1][name], b[1][name], rtol=RTOL, atol=RTOL * scale,
                                   msg=name)


def test_dead_tail_is_cut_after_the_last_target(tiny_tokenizer_dir):
    x, y = inputs_and_targets(*rows(tiny_tokenizer_dir))
    short_x, short_y = trim_dead_tail(x, y)
    last = max(int(np.flatnonzero(r != IGNORE)[-1]) for r in y) + 1
    assert short_x.shape == short_y.shape == (4, last) and last < x.shape[1]
    assert (short_x == x[:, :last]).all() and (short_y == y[:, :last]).all()
    assert (y[:, last:] == IGNORE).all()  # nothing counted was cut
    none = np.full_like(y, IGNORE)
    assert trim_dead_tail(x, none)[0].shape == (4, 1)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_head_on_kept_positions_gives_the_full_head_loss_and_grads(lora, reduction,
                                                                   tiny_tokenizer_dir):
    x, y = (torch.from_numpy(a) for a in inputs_and_targets(*rows(tiny_tokenizer_dir)))
    assert 0 < int((y != IGNORE).sum()) < y.numel() // 2  # most positions are masked
    m = model(lora)
    full = loss_and_grads(m, m.loss(x, y, reduction=reduction))
    kept = loss_and_grads(m, kept_positions_loss(m, x, y, reduction=reduction))
    assert_same(kept, full)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_sft_step_loss_equals_the_head_over_every_position(lora, tiny_tokenizer_dir):
    ids, mask = rows(tiny_tokenizer_dir)
    m = model(lora)
    x, y = (torch.from_numpy(a) for a in inputs_and_targets(ids, mask))
    full = loss_and_grads(m, m.loss(x, y, reduction="sum"))
    loss, count = sft_loss_sums(m, ids, mask, torch.device("cpu"))
    assert count == int((y != IGNORE).sum())
    assert_same(loss_and_grads(m, loss), full)
    # a micro-batch without a target: a zero loss that backward still takes
    loss, count = sft_loss_sums(m, ids, np.zeros_like(mask), torch.device("cpu"))
    assert count == 0 and float(loss) == 0.0
    loss.backward()
