"""The model's settings: the transformer's shape (`[model]`, one config for the recipe, the
checkpoint and the export) and the sampling defaults (`[generate]`).

Our own names are short (`num_layers`, `max_seq_len`); `to_hf` / `from_hf` map them onto the
names of the four Hugging Face classes the model reproduces layer for layer: Qwen3 (fournil's
own models), Qwen2, Llama (SmolLM2) and Mistral. They differ only in a few switches (QK-norm,
biases, RoPE scaling, a sliding window), and `family` says which class an export is written
as, so an imported model goes back out in its own architecture. Standard library only, so
that loading a recipe stays light.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fournil.core.validation import check

# Only these HF keys change the computation; every other key we write is the class's default
# written out, so no reader falls back on a default of its own.
_HF_NAMES = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "intermediate_size": "intermediate_size",
    "max_seq_len": "max_position_embeddings",
    "rms_norm_eps": "rms_norm_eps",
    "tie_embeddings": "tie_word_embeddings",
}

FAMILIES = ("qwen3", "qwen2", "llama", "mistral")  # HF model_type
HF_ARCHITECTURES = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
# What each class computes whatever its config says (transformers 5 modeling files): Qwen3
# always has QK-norm, Qwen2 always has q/k/v biases and never an o_proj one, only Llama reads
# mlp_bias, only Mistral a sliding window on every layer. A switch not listed is free.
_FAMILY_RULES: dict[str, dict[str, object]] = {
    "qwen3": {"qk_norm": True, "mlp_bias": False, "sliding_window": None},
    "qwen2": {"qk_norm": False, "qkv_bias": True, "o_bias": False, "mlp_bias": False,
              "sliding_window": None},
    "llama": {"qk_norm": False, "sliding_window": None},
    "mistral": {"qk_norm": False, "qkv_bias": False, "o_bias": False, "mlp_bias": False},
}
# Llama's and Qwen3's one `attention_bias` covers q, k, v and o alike
_ONE_ATTENTION_BIAS = ("llama", "qwen3")
# num_key_value_heads when config.json has no such key (an explicit null means num_heads)
_KV_HEADS_DEFAULT = {"mistral": 8, "qwen2": 32, "qwen3": 32}

# RoPE scalings (HF's rope_type): required keys, optional keys. `dynamic` and `longrope` change
# the frequencies with the current sequence length at run time: not implemented, refused.
ROPE_SCALINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "linear": (("factor",), ("original_max_position_embeddings",)),
    "llama3": (("factor", "low_freq_factor", "high_freq_factor",
                "original_max_position_embeddings"), ()),
    "yarn": (("factor", "original_max_position_embeddings"),
             ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
              "truncate")),
}


@dataclass
class TransformerConfig:
    # a recipe leaves it at 0: the tokenizer the pretrain stage trains on decides it
    vocab_size: int = 0
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention: num_heads / num_kv_heads queries per k/v
    head_dim: int = 64  # independent of hidden_size, as in Qwen3
    intermediate_size: int = 768
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = True
    # What an imported base needs. The defaults are fournil's own Qwen3 model, so checkpoints
    # written before these existed load unchanged and a model trained from scratch is the same.
    family: str = "qwen3"  # the HF class an export is written as: qwen3, qwen2, llama, mistral
    qk_norm: bool = True  # per-head RMSNorm on q and k before RoPE (Qwen3)
    qkv_bias: bool = False  # q/k/v biases: always in Qwen2, `attention_bias` in Llama/Qwen3
    o_bias: bool = False  # o_proj bias: `attention_bias` in Llama/Qwen3, never in Qwen2
    mlp_bias: bool = False  # gate/up/down biases: Llama's `mlp_bias`
    # HF's rope_parameters minus rope_type "default" and rope_theta, e.g. {"rope_type":
    # "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    # "original_max_position_embeddings": 8192}; rope.py computes the frequencies
    rope_scaling: dict | None = None
    sliding_window: int | None = None  # Mistral: a position sees itself and the N-1 before

    def __post_init__(self) -> None:
        self.validate("model")

    def validate(self, key: str) -> None:
        """Checked when a recipe is loaded, so that a shape the model cannot take fails
        before any data stage runs, not at pretraining; and for every config an import
        builds, so that an export never writes a config that loads as another model."""
        check(self.vocab_size >= 0, f"{key}.vocab_size", f"must be >= 0, got {self.vocab_size}")
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size", "max_seq_len"):
            check(getattr(self, name) > 0, f"{key}.{name}", f"must be > 0, got "
                  f"{getattr(self, name)}")
        check(self.num_heads % self.num_kv_heads == 0, f"{key}.num_kv_heads",
              f"must divide num_heads ({self.num_heads}), got {self.num_kv_heads}")
        check(self.head_dim % 2 == 0, f"{key}.head_dim",
              f"must be even for RoPE, got {self.head_dim}")
        check(self.rope_theta > 0, f"{key}.rope_theta", f"must be > 0, got {self.rope_theta}")
        check(self.rms_norm_eps > 0, f"{key}.rms_norm_eps", "must be > 0")
        check(self.family in FAMILIES, f"{key}.family",
              f"must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        for flag, value in _FAMILY_RULES[self.family].items():
            check(getattr(self, flag) == value, f"{key}.{flag}",
                  f"must be {value} for family {self.family!r} (its HF class cannot express "
                  f"{getattr(self, flag)!r})")
        if self.family in _ONE_ATTENTION_BIAS:
            check(self.qkv_bias == self.o_bias, f"{key}.o_bias",
                  f"must equal qkv_bias for family {self.family!r} (one attention_bias covers "
                  "q, k, v and o)")
        if self.sliding_window is not None:
            check(self.sliding_window > 0, f"{key}.sliding_window",
                  f"must be > 0 or absent, got {self.sliding_window}")
        if self.rope_scaling is not None:
            check_rope_scaling(self.rope_scaling, f"{key}.rope_scaling")

    def with_vocab(self, vocab_size: int) -> TransformerConfig:
        """This shape with the tokenizer's vocabulary: the config a model is built from."""
        return dataclasses.replace(self, vocab_size=vocab_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TransformerConfig:
        """Inverse of `to_dict`; unknown keys are errors so a typo never goes unnoticed."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown transformer config keys: {', '.join(unknown)}")
        return cls(**data)

    def rope_parameters(self) -> dict:
        """HF's `rope_parameters` (transformers >= 5): the type, theta and the scaling's keys."""
        return {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}

    def to_hf(self, bos_token_id: int | None, eos_token_id: int | list[int] | None,
              pad_token_id: int | None = None, dtype: object = "float32") -> dict:
        """The `config.json` of this model's family for transformers, vLLM and llama.cpp;
        `dtype` is a torch dtype or its name.

        Every switch is written, never left to the class's default (Mistral's sliding window
        is 4096 when absent, Qwen3's head_dim 128, and all four untie the embeddings). RoPE is
        written twice: transformers >= 5 reads `rope_parameters`, older versions and llama.cpp's
        converter the top-level `rope_theta` and `rope_scaling`; both carry the same values.
        The dtype is likewise written as both `dtype` (5.x) and `torch_dtype` (4.x).
        """
        dtype_name = str(dtype).removeprefix("torch.")
        family = self.family
        hf: dict = {
            "architectures": [HF_ARCHITECTURES[family]],
            "model_type": family,
            **{hf_name: getattr(self, name) for name, hf_name in _HF_NAMES.items()},
            "hidden_act": "silu",
        }
        if family in _ONE_ATTENTION_BIAS:
            hf["attention_bias"] = self.qkv_bias
        if family == "llama":
            hf["mlp_bias"] = self.mlp_bias
        hf["attention_dropout"] = 0.0
        hf["rope_theta"] = self.rope_theta
        hf["rope_parameters"] = self.rope_parameters()
        hf["rope_scaling"] = dict(self.rope_scaling) if self.rope_scaling else None
        if family in ("qwen3", "qwen2"):
            hf.update(use_sliding_window=False, sliding_window=None,
                      max_window_layers=self.num_layers)
        if family == "mistral":
            hf["sliding_window"] = self.sliding_window  # null: full attention
        hf.update({
            "initializer_range": 0.02,
            "use_cache": True,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "dtype": dtype_name,
            "torch_dtype": dtype_name,
        })
        if pad_token_id is not None:
            hf["pad_token_id"] = pad_token_id
        return hf

    @classmethod
    def from_hf(cls, hf: dict) -> TransformerConfig:
        """From the `config.json` of a Qwen3, Qwen2, Llama or Mistral model, with each class's
        own defaults for what it leaves out; refuses the variants this model does not
        implement rather than loading them with silently different outputs."""
        family = hf.get("model_type")
        if family not in FAMILIES:
            raise ValueError(f"unsupported model_type {family!r} (one of {', '.join(FAMILIES)})")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            if hf.get(name) is None:
                raise ValueError(f"{family} config has no {name}")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {hf['hidden_act']!r} (only silu)")
        num_layers, num_heads = hf["num_hidden_layers"], hf["num_attention_heads"]
        if family in ("qwen3", "qwen2"):
            _refuse_sliding_layers(hf, num_layers)
        rope_theta, scaling = _rope_from_hf(hf)
        attention_bias = bool(hf.get("attention_bias", False))
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads", _KV_HEADS_DEFAULT.get(family)) or num_heads,
            # Qwen3Config's head_dim defaults to 128, the others' to hidden_size / num_heads
            head_dim=hf.get("head_dim") or (128 if family == "qwen3"
                                            else hf["hidden_size"] // num_heads),
            intermediate_size=hf["intermediate_size"],
            max_seq_len=hf["max_position_embeddings"],
            rope_theta=rope_theta,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_embeddings=hf.get("tie_word_embeddings", False),  # all four default to untied
            family=family,
            qk_norm=family == "qwen3",
            qkv_bias=family == "qwen2" or (family in _ONE_ATTENTION_BIAS and attention_bias),
            o_bias=family in _ONE_ATTENTION_BIAS and attention_bias,
            mlp_bias=family == "llama" and bool(hf.get("mlp_bias", False)),
            rope_scaling=scaling,
            # MistralConfig's window is 4096 when the key is absent; null means none
            sliding_window=hf.get("sliding_window", 4096) if family == "mistral" else None,
        )


def check_rope_scaling(scaling: dict, key: str) -> None:
    """A RoPE scaling this model computes (rope.py) with every key it needs, and no key it
    would ignore: a parameter we did not implement must not silently change nothing."""
    check(isinstance(scaling, dict), key, f"expected a table, got {scaling!r}")
    rope_type = scaling.get("rope_type")
    check(rope_type in ROPE_SCALINGS, f"{key}.rope_type",
          f"unsupported {rope_type!r} (supported: {', '.join(ROPE_SCALINGS)}; dynamic and "
          "longrope change with the sequence length at run time and are not implemented)")
    required, optional = ROPE_SCALINGS[rope_type]
    missing = [k for k in required if scaling.get(k) is None]
    check(not missing, key, f"rope_type {rope_type!r} needs {', '.join(missing)}")
    unknown = sorted(set(scaling) - {"rope_type", *required, *optional})
    check(not unknown, key, f"rope_type {rope_type!r} does not take {', '.join(unknown)}")
    for name, value in scaling.items():
        if name == "truncate":
            check(isinstance(value, bool), f"{key}.truncate", f"must be true or false, got "
                  f"{value!r}")
        elif name != "rope_type" and value is not None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            check(ok, f"{key}.{name}", f"must be a number > 0, got {value!r}")
    if rope_type == "llama3":
        check(scaling["high_freq_factor"] > scaling["low_freq_factor"],
              f"{key}.high_freq_factor", "must be > low_freq_factor")


def _rope_from_hf(hf: dict) -> tuple[float, dict | None]:
    """(theta, scaling) from transformers 5's `rope_parameters` or the legacy `rope_theta` +
    `rope_scaling` (whose type key was `type`), as transformers' standardisation reads them."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", None) or hf.get("rope_theta") or 10000.0)
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    partial = params.pop("partial_rotary_factor", None) or hf.get("partial_rotary_factor") or 1.0
    if partial != 1.0:
        raise ValueError(f"unsupported partial_rotary_factor {partial} (RoPE on every dimension "
                         "only)")
    if rope_type == "default":
        return theta, None
    scaling = {"rope_type": rope_type, **params}
    if rope_type in ("llama3", "yarn"):
        # pinned: transformers defaults it to max_position_embeddings, so a later, shorter
        # max_seq_len would otherwise move the frequencies
        if scaling.get("original_max_position_embeddings") is None:
            scaling["original_max_position_embeddings"] = hf["max_position_embeddings"]
    if rope_type == "yarn" and scaling.get("factor") is None:
        scaling["factor"] = hf["max_position_embeddings"] / scaling[
            "original_max_position_embeddings"]
    check_rope_scaling(scaling, "rope_parameters")
    return theta, scaling


def _refuse_sliding_layers(hf: dict, num_layers: int) -> None:
    """Qwen2/Qwen3 slide a window over the layers from `max_window_layers` on when
    `use_sliding_window` is set (or as `layer_types` says): a mix this model does not run."""
    layer_types = hf.get("layer_types")
    if layer_types is not None:
        sliding = set(layer_types) != {"full_attention"}
    else:
        sliding = (bool(hf.get("use_sliding_window")) and hf.get("sliding_window") is not None
                   and hf.get("max_window_layers", num_layers) < num_layers)
    if sliding:
        raise ValueError("unsupported sliding-window layers (use_sliding_window / layer_types): "
                         "only full attention on every layer")


@dataclass
class GenerateConfig:
    """Sampling defaults: the bake's sample, `fournil generate`, and the export's
    generation_config.json (which `fournil serve` and transformers read)."""

    prompt: str = "Il était une fois"
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int = 0

    def validate(self, key: str) -> None:
        check(self.max_new_tokens > 0, f"{key}.max_new_tokens", "must be > 0")
        check(self.temperature >= 0, f"{key}.temperature", "must be >= 0 (0 is greedy)")
        check(self.top_k >= 0, f"{key}.top_k", "must be >= 0 (0 disables)")
        check(0 < self.top_p <= 1, f"{key}.top_p", "must be in (0, 1]")
