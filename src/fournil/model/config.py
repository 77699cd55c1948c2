"""The model's settings: the transformer's shape (`[model]`, one config for the recipe, the
checkpoint and the export) and the sampling defaults (`[generate]`).

Our own names are short (`num_layers`, `max_seq_len`); `to_hf` / `from_hf` map them onto
the `Qwen3Config` names so an export loads in transformers, vLLM and llama.cpp. Standard
library only, so that loading a recipe stays light.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fournil.core.validation import check

# Only these HF keys change the computation; every other Qwen3 key we write is a default.
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

    def __post_init__(self) -> None:
        self.validate("model")

    def validate(self, key: str) -> None:
        """Checked when a recipe is loaded, so that a shape the model cannot take fails
        before any data stage runs, not at pretraining."""
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

    def to_hf(self, bos_token_id: int, eos_token_id: int, pad_token_id: int | None = None,
              dtype: object = "float32") -> dict:
        """A Qwen3 `config.json` for transformers, vLLM and llama.cpp; `dtype` is a torch
        dtype or its name.

        RoPE theta is written twice: transformers >= 5 reads `rope_parameters`, older
        versions (>= 4.51) and llama.cpp's converter read the top-level `rope_theta`; both
        carry the same value, so every reader agrees. The dtype is likewise written as both
        `dtype` (5.x) and `torch_dtype` (4.x).
        """
        dtype_name = str(dtype).removeprefix("torch.")
        hf = {
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            **{hf_name: getattr(self, name) for name, hf_name in _HF_NAMES.items()},
            "hidden_act": "silu",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rope_scaling": None,
            "use_sliding_window": False,
            "sliding_window": None,
            "max_window_layers": self.num_layers,
            "initializer_range": 0.02,
            "use_cache": True,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "dtype": dtype_name,
            "torch_dtype": dtype_name,
        }
        if pad_token_id is not None:
            hf["pad_token_id"] = pad_token_id
        return hf

    @classmethod
    def from_hf(cls, hf: dict) -> TransformerConfig:
        """From a Qwen3 `config.json`; refuses the variants this model does not implement
        rather than loading them with silently different outputs."""
        if hf.get("model_type") != "qwen3":
            raise ValueError(f"not a Qwen3 config (model_type={hf.get('model_type')!r})")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {hf['hidden_act']!r} (only silu)")
        if hf.get("attention_bias", False):
            raise ValueError("unsupported attention_bias=true")
        if hf.get("use_sliding_window", False):
            raise ValueError("unsupported use_sliding_window=true")
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"unsupported rope_type {rope_type!r} (only default)")
        num_heads = hf["num_attention_heads"]
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
            intermediate_size=hf["intermediate_size"],
            max_seq_len=hf["max_position_embeddings"],
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            # Qwen3Config's own default is untied
            tie_embeddings=hf.get("tie_word_embeddings", False),
        )


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
