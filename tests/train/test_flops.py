"""Model FLOPs per token against torch's own FLOP counter on a real training step, and the
trainer's logged FLOP/s."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from fournil.model.config import TransformerConfig
from fournil.model.transformer import Transformer
from fournil.pretrain.stage import run_pretrain
from fournil.train.flops import bf16_peak_flops, flops_per_token, peak_flops


@pytest.mark.parametrize("config", [
    TransformerConfig(vocab_size=96, hidden_size=48, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=16, intermediate_size=80, max_seq_len=32, tie_embeddings=True),
    TransformerConfig(vocab_size=72, hidden_size=32, num_layers=3, num_heads=2, num_kv_heads=2,
                      head_dim=24, intermediate_size=56, max_seq_len=32, tie_embeddings=False),
], ids=["gqa-tied", "mha-untied"])
def test_flops_per_token_matches_torch_flop_counter(config):
    """torch counts the matmuls of a forward + backward pass, attention's included (its math
    kernel: torch's counter has no entry for the fused CPU one); the formula's 6N also counts
    the norm weights' 6 FLOPs per parameter, as PaLM's does."""
    torch.manual_seed(0)
    model = Transformer(config)
    batch, seq_len = 3, 20
    ids = torch.randint(0, config.vocab_size, (batch, seq_len + 1))
    # linear_ce accumulates the head's weight gradient with the in-place addmm_, which torch's
    # counter leaves out: count it as it counts addmm
    def addmm_flops(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    in_place = {torch.ops.aten.addmm_: addmm_flops}
    with (FlopCounterMode(display=False, custom_mapping=in_place) as counter,
          sdpa_kernel(SDPBackend.MATH)):
        model.loss(ids[:, :-1], ids[:, 1:]).backward()
    norm_weights = sum(p.numel() for name, p in model.named_parameters()
                       if name.endswith("norm.weight"))
    per_token = flops_per_token(config, seq_len)
    assert counter.get_total_flops() == batch * seq_len * (per_token["total"] - 6 * norm_weights)
    assert per_token["6dV (LM head)"] == 6 * config.hidden_size * config.vocab_size


def test_peak_flops_by_gpu_name():
    assert bf16_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bf16_peak_flops("NVIDIA H100 PCIe") == 756e12  # the variant before its family
    assert bf16_peak_flops("NVIDIA H200") == 989e12
    assert bf16_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bf16_peak_flops("NVIDIA L40S") == 362e12
    assert bf16_peak_flops("NVIDIA L4") == 121e12
    assert bf16_peak_flops("Tesla T4") is None
    assert peak_flops(torch.device("cpu"), bf16=True) is None


def test_pretrain_logs_model_flops_per_second(smoke_recipe, smoke_bake, tmp_path):
    _, layout = smoke_bake
    cfg = dataclasses.replace(smoke_recipe.pretrain, max_steps=4, log_every=2, eval_every=4,
                              checkpoint_every=4)
    run_pretrain(layout.tokens, layout.tokenizer, tmp_path / "pretrain", smoke_recipe.model,
                 cfg, seed=3)
    rows = [json.loads(line) for line in (tmp_path / "pretrain" / "metrics.jsonl")
            .read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4]
    config = Transformer.load(tmp_path / "pretrain" / "checkpoints" / "step-000004").config
    per_token = flops_per_token(config, cfg.seq_len)["total"]
    for row in train_rows:
        assert row["model_flops_per_s"] == pytest.approx(row["tokens_per_s"] * per_token,
                                                         rel=1e-3)
        assert "mfu" not in row  # no agreed peak on a CPU
