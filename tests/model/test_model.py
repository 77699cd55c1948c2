import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from fournil.export.hf import export_hf
from fournil.model.config import TransformerConfig
from fournil.model.transformer import Transformer


def tiny_config(tie: bool = True, **overrides) -> TransformerConfig:
    shape = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=16, intermediate_size=128, max_seq_len=64, rope_theta=5000.0,
                 tie_embeddings=tie)
    return TransformerConfig(**{**shape, **overrides})


def random_model(tie: bool = True, seed: int = 0, **overrides) -> Transformer:
    """Weights far from the init (norms included), so a mismatch in any part shows up."""
    torch.manual_seed(seed)
    model = Transformer(tiny_config(tie, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    return model.eval()


def random_batch(vocab: int = 320, batch: int = 2, length: int = 24) -> torch.Tensor:
    ids = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 0  # BOS, also the pad id, which HF gives a padding_idx embedding
    ids[0, 5] = 2
    return ids


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_export_matches_transformers_qwen3(tie, tiny_tokenizer_dir, tmp_path):
    model = random_model(tie)
    out = export_hf(model, tmp_path / "export", tiny_tokenizer_dir, "# tiny\n",
                    generation={"temperature": 0.7, "top_k": 20, "top_p": 0.9,
                                "max_new_tokens": 32, "prompt": "ignored"})
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json"]
    assert not (tmp_path / "export.partial").exists()
    with safe_open(out / "model.safetensors", "pt") as f:
        assert ("lm_head.weight" in f.keys()) == (not tie)
        assert f.metadata() == {"format": "pt"}

    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == "Qwen3ForCausalLM"
    assert hf.config.rope_parameters["rope_theta"] == 5000.0
    assert hf.config.num_key_value_heads == 2  # GQA
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) == tie

    ids = random_batch()
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert ours.std() > 0.5  # not a trivially small comparison
    assert (ours - theirs).abs().max() < 1e-4


def test_state_dict_keys_are_hf_qwen3():
    cfg = tiny_config(tie=False)
    hf_config = Qwen3Config(**cfg.to_hf(bos_token_id=0, eos_token_id=0))
    hf_keys = {k: v.shape for k, v in Qwen3ForCausalLM(hf_config).state_dict().items()}
    ours = {k: v.shape for k, v in Transformer(cfg).state_dict().items()}
    assert ours == hf_keys


def test_export_extras_load_in_transformers(tiny_tokenizer_dir, tmp_path):
    out = export_hf(random_model(), tmp_path / "export", tiny_tokenizer_dir, "# card\n",
                    generation={"temperature": 0.0, "max_new_tokens": 16})
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok("Bonjour").input_ids[0] == 0
    assert hf_tok.eos_token_id == 0
    gen = GenerationConfig.from_pretrained(out)
    assert gen.eos_token_id == [0, 2] and gen.bos_token_id == 0 and gen.pad_token_id == 0
    assert gen.do_sample is False and gen.max_new_tokens == 16
    assert (out / "README.md").read_text() == "# card\n"
    # exporting again replaces the folder atomically
    export_hf(random_model(seed=1), out, tiny_tokenizer_dir, "# v2\n")
    assert (out / "README.md").read_text() == "# v2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_bfloat16_export(tiny_tokenizer_dir, tmp_path):
    out = export_hf(random_model(), tmp_path / "export", tiny_tokenizer_dir, "", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = Transformer.load(out)
    assert loaded.dtype == torch.bfloat16
    assert Transformer.load(out, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_load_round_trips_checkpoint_and_export(tie, tiny_tokenizer_dir, tmp_path):
    model = random_model(tie)
    ids = random_batch()
    with torch.no_grad():
        expected = model(ids)
    model.save(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["fournil"] == 1
    export_hf(model, tmp_path / "export", tiny_tokenizer_dir, "")
    for folder in ("ckpt", "export"):
        loaded = Transformer.load(tmp_path / folder)
        assert loaded.config == model.config
        assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tie
        with torch.no_grad():
            assert torch.equal(loaded(ids), expected), folder


def test_load_is_strict(tmp_path):
    from safetensors.torch import load_file, save_file

    random_model().save(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["model.layers.9.mlp.up_proj.weight"] = state.pop("model.layers.1.mlp.up_proj.weight")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="missing.*layers.1.mlp.up_proj.*unexpected.*layers.9"):
        Transformer.load(tmp_path)


def test_loss_is_cross_entropy_of_logits():
    model = random_model()
    ids = random_batch()
    targets = ids.roll(-1, dims=1)
    targets[:, -1] = -100
    targets[1, :4] = -100
    logits, loss = model(ids, targets)
    expected = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                               ignore_index=-100)
    assert torch.allclose(loss, expected)
    assert torch.allclose(model.loss(ids, targets), expected)
    per_token = model.loss(ids, targets, reduction="none")
    assert per_token.shape == ids.shape
    assert torch.allclose(per_token.sum() / (targets != -100).sum(), expected)
    loss.backward()
    assert model.model.embed_tokens.weight.grad is not None


def test_kv_cache_matches_full_forward():
    """Chunks fed through the cache (prefill, several tokens, one token) give the same
    logits as one forward pass over the whole sequence."""
    model = random_model()
    ids = random_batch(length=20)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(batch_size=2)
        chunks = [model(ids[:, a:b], kv_cache=cache) for a, b in [(0, 8), (8, 13), (13, 14),
                                                                  (14, 20)]]
    assert cache.pos == 20
    assert (torch.cat(chunks, dim=1) - full).abs().max() < 1e-5


def test_sequence_longer_than_context_is_an_error():
    model = random_model()
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_config_conversions():
    cfg = TransformerConfig(num_kv_heads=1).with_vocab(1000)
    assert cfg.vocab_size == 1000 and cfg.num_kv_heads == 1 and cfg.head_dim == 64
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    hf = cfg.to_hf(bos_token_id=0, eos_token_id=0)
    assert hf["rope_theta"] == hf["rope_parameters"]["rope_theta"] == cfg.rope_theta
    assert TransformerConfig.from_hf(hf) == cfg
    assert TransformerConfig.from_hf(json.loads(Qwen3Config(**hf).to_json_string())) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TransformerConfig.from_dict({**cfg.to_dict(), "n_layer": 3})
    with pytest.raises(ValueError, match="num_kv_heads"):
        TransformerConfig(vocab_size=10, num_heads=4, num_kv_heads=3)


def test_num_parameters():
    tied, untied = Transformer(tiny_config(True)), Transformer(tiny_config(False))
    assert untied.num_parameters() - tied.num_parameters() == 512 * 64
    assert tied.num_parameters(exclude_embeddings=True) == tied.num_parameters() - 512 * 64
