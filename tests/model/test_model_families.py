"""fournil's Transformer against transformers' own Llama, Mistral, Qwen2 and Qwen3 classes: tiny
random models made by transformers with each family's switches (biases, untied heads, RoPE
scalings, a sliding window shorter than the sequence), imported, run, and written back as the
same class; then the config translation, the RoPE frequencies, and the folders real bases come
in (shards, bfloat16, a tied head stored anyway)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from fournil.export.hf import export_hf
from fournil.model.config import TransformerConfig
from fournil.model.folder import read_config
from fournil.model.imported import read_hf_folder, save_imported
from fournil.model.rope import inv_freq_and_scale
from fournil.model.transformer import Transformer

VOCAB, T = 320, 24  # the tiny tokenizer's vocabulary; a sequence longer than the window (7)
CASES = {
    # SmolLM2's shape: tied, theta 1e5, head_dim = hidden / heads
    "llama-tied": (LlamaConfig, dict(tie_word_embeddings=True, rope_parameters={
        "rope_type": "default", "rope_theta": 100000.0})),
    # every Llama switch at once: attention_bias (q, k, v and o), mlp_bias, untied, a head_dim
    # that is not hidden / heads, Llama 3.1's RoPE scaling
    "llama-bias-llama3": (LlamaConfig, dict(
        tie_word_embeddings=False, attention_bias=True, mlp_bias=True, head_dim=24,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16})),
    "llama-linear": (LlamaConfig, dict(rope_parameters={"rope_type": "linear",
                                                        "rope_theta": 10000.0, "factor": 4.0})),
    "mistral-window": (MistralConfig, dict(sliding_window=7, tie_word_embeddings=False,
                                           rope_parameters={"rope_type": "default",
                                                            "rope_theta": 1000000.0})),
    # q/k/v biases (always, in Qwen2), none on o_proj; YaRN with its attention factor
    "qwen2-yarn": (Qwen2Config, dict(tie_word_embeddings=True, rope_parameters={
        "rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
        "original_max_position_embeddings": 16})),
    "qwen3": (Qwen3Config, dict(head_dim=32, tie_word_embeddings=True, rope_parameters={
        "rope_type": "default", "rope_theta": 1000000.0})),
    "qwen3-bias-untied-linear": (Qwen3Config, dict(
        head_dim=16, attention_bias=True, tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
}

# Every comparison is of two float32 computations of the same function, in other orders
# (transformers' eager attention softmaxes explicitly, SDPA fuses; GQA repeats k/v or not).
# Each logit sums products over reductions of length n <= 128 (hidden 64, MLP 96, heads 4 x
# T 24), twice over two layers: the classic worst-case bound of such sums is n * 2^-24 ~ 8e-6
# relative to the terms, which with |logit| <= 10 (checked) is 1e-4: the bound is the
# worst case of the arithmetic, and the typical error (sqrt(n) * 2^-24) is ~1e-6.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def folders(tiny_hf_model) -> tuple[dict, torch.Tensor]:
    """Each case as a folder transformers saved (conftest's `tiny_hf_model`), transformers'
    logits on a batch of two sequences (eager attention: another kernel than ours), its class
    and its state dict's names; and the batch."""
    ids = torch.randint(3, VOCAB, (2, T), generator=torch.Generator().manual_seed(1))
    made = {}
    for name, (config_class, switches) in CASES.items():
        folder = tiny_hf_model(name, config_class, **switches)
        hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        with torch.no_grad():
            logits = hf(ids).logits
        peak = float(logits.abs().max())
        # what TOLERANCE rests on: logits far from 0 (else any two models would agree within
        # it) and at most 10 (else the arithmetic's error bound passes 1e-4)
        assert peak > 1.0, f"{name}: logits up to {peak:.3g} are too small to compare"
        assert peak <= 10, f"{name}: logits up to {peak:.3g} break TOLERANCE's derivation"
        made[name] = (folder, logits, type(hf).__name__, set(hf.state_dict()))
    return made, ids


def _logits(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids)


@pytest.mark.parametrize("case", CASES)
def test_import_matches_transformers(folders, case):
    made, ids = folders
    folder, expected, hf_class, hf_keys = made[case]
    model = Transformer.load(folder).eval()
    assert model.config.family == json.loads((folder / "config.json").read_text())["model_type"]
    # exactly the family's tensors (a tied head is one tensor, which HF lists twice)
    ours = set(model.state_dict())
    assert ours == hf_keys | ({"lm_head.weight"} if model.config.tie_embeddings else set())
    assert (_logits(model, ids) - expected).abs().max() < TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_kv_cache_generation_equals_the_full_forward(folders, case):
    """Prefill, a chunk, then one token at a time (past the sliding window, whose mask must
    follow the cache) give the logits of one pass over the whole sequence."""
    made, ids = folders
    model = Transformer.load(made[case][0]).eval()
    full = _logits(model, ids)
    cache = model.new_kv_cache(batch_size=2, max_len=T)
    with torch.no_grad():
        parts = [model(ids[:, :10], kv_cache=cache), model(ids[:, 10:13], kv_cache=cache)]
        parts += [model(ids[:, i:i + 1], kv_cache=cache) for i in range(13, T)]
    assert (torch.cat(parts, dim=1) - full).abs().max() < TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_export_back_loads_as_the_same_class(folders, case, tmp_path):
    """Both ways out: an import saved as a model folder (save_imported) and the export stage's
    writer (export_hf): transformers loads each as the base's class, with the same logits."""
    made, ids = folders
    folder, expected, hf_class, _ = made[case]
    imported = read_hf_folder(folder)
    model = Transformer.from_state_dict(imported.config, imported.state_dict).eval()
    ours = _logits(model, ids)
    saved = save_imported(imported, tmp_path / "imported")
    exported = export_hf(model, tmp_path / "export", folder, "# card\n")
    for out in (saved, exported):
        assert read_config(out) == imported.config
        assert torch.equal(_logits(Transformer.load(out).eval(), ids), ours)
        hf = AutoModelForCausalLM.from_pretrained(out, attn_implementation="sdpa").eval()
        assert type(hf).__name__ == hf_class
        with torch.no_grad():
            assert (hf(ids).logits - ours).abs().max() < TOLERANCE, out.name
    assert (ours - expected).abs().max() < TOLERANCE


@pytest.mark.parametrize("case, dropped", [
    ("mistral-window", {"sliding_window": None}),
    ("llama-bias-llama3", {"rope_scaling": None}),
    ("llama-linear", {"rope_scaling": None}),
    ("qwen2-yarn", {"rope_scaling": None}),
    ("qwen3-bias-untied-linear", {"qkv_bias": False, "o_bias": False}),
])
def test_a_dropped_switch_fails_the_comparison(folders, case, dropped):
    """The negative control: the same weights with one switch dropped are far outside the
    tolerance, so the parity tests above test the switch."""
    made, ids = folders
    folder, expected, _, _ = made[case]
    good = Transformer.load(folder)
    bad = Transformer(dataclasses.replace(good.config, **dropped)).eval()
    state = {k: v for k, v in good.state_dict().items() if k in bad.state_dict()}
    bad.load_state_dict(state)
    assert (_logits(bad, ids) - expected).abs().max() > 100 * TOLERANCE


# --- the config and the RoPE frequencies ----------------------------------------------------

FAMILY_CLASSES = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config,
                  "qwen3": Qwen3Config}
SHAPE = dict(vocab_size=100, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
             head_dim=16, intermediate_size=96, max_seq_len=64)
CONFIGS = [
    TransformerConfig(**SHAPE),  # fournil's own
    TransformerConfig(**SHAPE, family="qwen3", qkv_bias=True, o_bias=True, tie_embeddings=False,
                      rope_scaling={"rope_type": "linear", "factor": 2.0}),
    TransformerConfig(**SHAPE, family="qwen2", qk_norm=False, qkv_bias=True,
                      rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                    "original_max_position_embeddings": 16}),
    TransformerConfig(**SHAPE, family="llama", qk_norm=False, qkv_bias=True, o_bias=True,
                      mlp_bias=True, rope_scaling={
                          "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    TransformerConfig(**SHAPE, family="mistral", qk_norm=False, sliding_window=7),
    TransformerConfig(**SHAPE, family="mistral", qk_norm=False, sliding_window=None),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.family)
def test_config_round_trips_through_the_family_class(cfg):
    hf = cfg.to_hf(bos_token_id=0, eos_token_id=0)
    assert TransformerConfig.from_hf(hf) == cfg
    # what the class itself makes of it, saved as transformers saves it
    config_class = FAMILY_CLASSES[cfg.family]
    assert TransformerConfig.from_hf(json.loads(config_class(**hf).to_json_string())) == cfg
    if cfg.family == "mistral":
        assert config_class(**hf).sliding_window == cfg.sliding_window


def test_class_defaults_are_the_classes(tmp_path):
    """What a config.json leaves out means what the class's default is, not ours."""
    base = dict(vocab_size=100, hidden_size=256, num_hidden_layers=2, num_attention_heads=32,
                intermediate_size=96, max_position_embeddings=8192)
    for family, config_class in FAMILY_CLASSES.items():
        cfg = TransformerConfig.from_hf({"model_type": family, **base})
        theirs = config_class(**base)
        assert cfg.tie_embeddings is theirs.tie_word_embeddings is False, family
        assert cfg.head_dim == (getattr(theirs, "head_dim", None) or 8), family
        assert cfg.num_kv_heads == theirs.num_key_value_heads, family
        assert cfg.rms_norm_eps == theirs.rms_norm_eps, family
        assert cfg.rope_theta == theirs.rope_parameters["rope_theta"], family
    assert TransformerConfig.from_hf({"model_type": "qwen3", **base}).head_dim == 128
    assert TransformerConfig.from_hf({"model_type": "mistral", **base}).sliding_window == 4096
    # yarn and llama3 pin the original length, which HF defaults to max_position_embeddings
    yarn = TransformerConfig.from_hf({"model_type": "qwen2", **base, "rope_scaling": {
        "type": "yarn", "factor": 4.0}, "rope_theta": 1e6})
    assert yarn.rope_scaling == {"rope_type": "yarn", "factor": 4.0,
                                 "original_max_position_embeddings": 8192}
    assert yarn.rope_theta == 1e6


@pytest.mark.parametrize("change, message", [
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"model_type": "gemma"}, "model_type"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "dynamic"),
    ({"rope_parameters": {"rope_type": "longrope", "factor": 2.0}}, "longrope"),
    ({"rope_parameters": {"rope_type": "linear"}}, "needs factor"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "beta_fast": 3}}, "beta_fast"),
    ({"rope_parameters": None, "rope_scaling": {"type": "dynamic", "factor": 2.0}}, "dynamic"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 16,
      "max_window_layers": 1}, "sliding-window layers"),
    ({"model_type": "qwen3", "layer_types": ["full_attention", "sliding_attention"]},
     "sliding-window layers"),
    ({"intermediate_size": None}, "intermediate_size"),
])
def test_what_the_model_cannot_run_is_refused(change, message):
    hf = {**CONFIGS[3].to_hf(bos_token_id=0, eos_token_id=0), **change}
    with pytest.raises(ValueError, match=message):
        TransformerConfig.from_hf(hf)


@pytest.mark.parametrize("switches, key", [
    ({"family": "qwen2", "qk_norm": False}, "qkv_bias"),  # Qwen2 always has q/k/v biases
    ({"family": "llama", "qk_norm": False, "qkv_bias": True}, "o_bias"),  # one attention_bias
    ({"family": "llama"}, "qk_norm"),
    ({"family": "mistral", "qk_norm": False, "mlp_bias": True}, "mlp_bias"),
    ({"family": "qwen3", "sliding_window": 8}, "sliding_window"),
    ({"family": "gpt2"}, "family"),
])
def test_a_config_no_family_class_can_express_is_an_error(switches, key):
    with pytest.raises(ValueError, match=rf"model\.{key}"):
        TransformerConfig(**SHAPE, **switches)


@pytest.mark.parametrize("cfg", CONFIGS[1:4], ids=lambda c: c.rope_scaling["rope_type"])
def test_rope_frequencies_are_transformers(cfg):
    config = FAMILY_CLASSES[cfg.family](**cfg.to_hf(bos_token_id=0, eos_token_id=0))
    theirs, their_scale = ROPE_INIT_FUNCTIONS[cfg.rope_scaling["rope_type"]](config, "cpu")
    ours, our_scale = inv_freq_and_scale(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    # the same float32 operations in the same order: a few roundings apart at most
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)
    assert our_scale == pytest.approx(their_scale, rel=1e-12)
    assert not torch.allclose(ours, inv_freq_and_scale(cfg.head_dim, cfg.rope_theta)[0])


# --- real folders: shards, bfloat16, a redundant head ---------------------------------------

def test_sharded_bfloat16_folder_with_a_redundant_head(folders, tmp_path):
    made, ids = folders
    folder, expected = made["llama-tied"][:2]
    hf = AutoModelForCausalLM.from_pretrained(folder).to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    shutil.copyfile(folder / "tokenizer.json", tmp_path / "sharded" / "tokenizer.json")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert Transformer.load(tmp_path / "sharded").dtype == torch.bfloat16  # as stored
    model = Transformer.load(tmp_path / "sharded", dtype=torch.float32).eval()
    # bfloat16 weights: 8 bits of mantissa, 2^-9 relative per weight; through two layers the
    # logits move by ~1% of their size, far more than float32 rounding and far less than 1
    assert (_logits(model, ids) - expected).abs().max() < 0.05 * expected.abs().max()
    assert read_hf_folder(tmp_path / "sharded").state_dict["model.norm.weight"].dtype == \
        torch.float32

    # a tied model that still ships lm_head.weight: equal, so dropped; different, refused
    shutil.copytree(folder, tmp_path / "head")
    state = load_file(tmp_path / "head" / "model.safetensors")
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    save_file(state, tmp_path / "head" / "model.safetensors")
    assert torch.equal(_logits(Transformer.load(tmp_path / "head").eval(), ids),
                       _logits(Transformer.load(folder).eval(), ids))
    state["lm_head.weight"][0, 0] += 1
    save_file(state, tmp_path / "head" / "model.safetensors")
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        Transformer.load(tmp_path / "head")


def test_unusable_folders_are_clear_errors(folders, tmp_path):
    made, _ = folders
    shutil.copytree(made["llama-tied"][0], tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="only pickled weights"):
        Transformer.load(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    with pytest.raises(ValueError, match="config.json.*hidden_act"):
        Transformer.load(tmp_path / "m")
