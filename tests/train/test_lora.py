"""LoRA through peft on our transformer: merged weights compute what the adapted model
computes, only the adapters train, and a LoRA SFT checkpoint exports to a plain Qwen3 that
transformers runs with the same logits (its adapter also loads with peft on the base)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fournil.export.hf import export_hf
from fournil.model.config import TransformerConfig
from fournil.model.transformer import Transformer
from fournil.sft.config import SFTConfig
from fournil.sft.stage import run_sft
from fournil.train.checkpoint import final_checkpoint
from fournil.train.config import LoRAConfig
from fournil.train.muon import make_optimizer

peft = pytest.importorskip("peft")  # the lora extra; the dev extra installs it
transformers = pytest.importorskip("transformers")

from fournil.train.lora import (  # noqa: E402  (after the guard: lora.py needs peft)
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    add_lora,
    load_adapter,
    merged,
    save_adapter,
)

CONFIG = TransformerConfig(vocab_size=320, hidden_size=32, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=8, intermediate_size=64, max_seq_len=128)


def tiny(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(CONFIG)


def randomise_adapters(model: torch.nn.Module) -> None:
    """B starts at zero (the adapted model is the base); a trained adapter is not."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.normal_(0, 0.3)


def test_merged_weights_give_the_adapted_logits():
    x = torch.randint(0, 320, (2, 24))
    base = tiny()
    base_logits = base(x).detach()
    model = add_lora(tiny(), LoRAConfig(rank=4, alpha=8, dropout=0.1))
    assert torch.equal(model.eval()(x), base_logits)  # B = 0: nothing changed yet
    randomise_adapters(model)
    adapted = model(x).detach()
    assert (adapted - base_logits).abs().max() > 1e-2  # the adapters do something
    plain = merged(model)
    assert type(plain.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert plain.lm_head.weight is plain.model.embed_tokens.weight  # still tied
    torch.testing.assert_close(plain(x), adapted, atol=1e-5, rtol=0)
    assert torch.equal(model(x), adapted)  # merging left the adapted model as it was


def test_only_the_adapters_train():
    model = add_lora(tiny(), LoRAConfig(rank=2, targets=["q_proj", "v_proj", "down_proj"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj", "down_proj"}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = make_optimizer(model, SFTConfig().optimizer)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    x = torch.randint(0, 320, (2, 16))
    for _ in range(3):
        model.loss(x[:, :-1], x[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n)


def test_adapter_round_trip(tmp_path):
    cfg = LoRAConfig(rank=4)
    model = add_lora(tiny(), cfg)
    randomise_adapters(model)
    save_adapter(model, tmp_path, cfg, base="base")
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"
    again = add_lora(tiny(), cfg)
    load_adapter(again, tmp_path)
    x = torch.randint(0, 320, (1, 12))
    assert torch.equal(again.eval()(x), model.eval()(x))


def test_lora_sft_checkpoint_exports_to_transformers(tiny_tokenizer_dir, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_tokenizer_dir / name, base / name)
    tiny().save(base)
    with open(tmp_path / "chats.jsonl", "w", encoding="utf-8") as f:
        for i in range(12):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"Combien de pains, {i} ?"},
                {"role": "assistant", "content": f"Il y a {i} pains."}]}) + "\n")
    cfg = SFTConfig(max_steps=6, seq_len=127, batch_size=2, warmup_steps=1, eval_every=6,
                    checkpoint_every=6, device="cpu", lora=LoRAConfig(rank=4))
    cfg.optimizer.lr = 1e-2
    run_sft([tmp_path / "chats.jsonl"], base, tmp_path / "sft", cfg, seed=0)
    ckpt = final_checkpoint(tmp_path / "sft")
    assert (ckpt / ADAPTER_WEIGHTS).exists() and (ckpt / ADAPTER_CONFIG).exists()
    tuned = Transformer.load(ckpt).eval()  # the merged weights: a plain checkpoint
    export_hf(tuned, tmp_path / "export", ckpt, "# test")
    export_hf(Transformer.load(base), tmp_path / "base-export", base, "# base")

    x = torch.randint(3, 320, (2, 20))
    ours = tuned(x)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export",
                                                           dtype=torch.float32).eval()
    torch.testing.assert_close(hf(x).logits, ours, atol=1e-5, rtol=1e-5)
    assert (ours - Transformer.load(base)(x)).abs().max() > 1e-3  # tuning changed the model
    # the adapter alone, on the base model's export, with peft's own loader
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base-export",
                                                                dtype=torch.float32)
    adapted = peft.PeftModel.from_pretrained(hf_base, ckpt).eval()
    torch.testing.assert_close(adapted(x).logits, ours, atol=1e-5, rtol=1e-5)
