"""LoRA through `peft`: low-rank adapters on our transformer's nn.Linear layers, merged at
save time so every checkpoint is a plain Qwen3 model.

    W x  ->  W x + (alpha / r) B A dropout(x),   A: [r, in], B: [out, r], B = 0 at the start

`peft.inject_adapter_in_model` wraps the named layers of any nn.Module (our parameter names
are Qwen3's, so the targets are `q_proj`, …, `down_proj`) and freezes everything else. peft is
an optional extra (`pip install 'fournil[lora]'`: it pulls in transformers and accelerate);
it is imported only when LoRA is on.

The adapter is saved in PEFT's own format (`adapter_model.safetensors` with
`base_model.model.`-prefixed keys, `adapter_config.json`), so it also loads with
`peft.PeftModel.from_pretrained` on the base model's export in transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fournil.model.transformer import Transformer
from fournil.train.config import LoRAConfig

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER = "default"  # peft's adapter name; one adapter per model here
PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the model's own names


def _peft():
    try:
        import peft
    except ImportError as e:
        raise ImportError("LoRA (lora.rank > 0) needs peft: pip install 'fournil[lora]'") from e
    return peft


def peft_config(cfg: LoRAConfig, base: str | None = None):
    return _peft().LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=list(cfg.targets), bias="none",
                              task_type="CAUSAL_LM", base_model_name_or_path=base)


def add_lora(model: Transformer, cfg: LoRAConfig) -> Transformer:
    """Adapters on `cfg.targets`, in place; every other parameter is frozen. B starts at zero,
    so the adapted model computes exactly what the base did."""
    if cfg.rank <= 0:
        raise ValueError("add_lora needs lora.rank > 0")
    model = _peft().inject_adapter_in_model(peft_config(cfg), model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():  # peft does this; a wrong guess would be silent
        p.requires_grad_(".lora_" in name)
    return model


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The adapted layers by their name in the plain model (`model.layers.0.self_attn.q_proj`)."""
    from peft.tuners.lora import LoraLayer  # only ever called on a model add_lora adapted
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def has_lora(model: nn.Module) -> bool:
    return any(".lora_" in name for name, _ in model.named_parameters())


@torch.no_grad()
def merged(model: Transformer) -> Transformer:
    """A plain Transformer on the CPU whose weights are the adapted model's merged
    (W + alpha/r B A): it computes what the adapted model computes in eval mode. The adapted
    model is left untouched (merging in place and unmerging would round the base weights,
    and a resumed run would drift from an uninterrupted one)."""
    layers = lora_layers(model)
    state = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        owner = key.removesuffix(".base_layer.weight")
        if owner in layers:
            value = value + layers[owner].get_delta_weight(ADAPTER).to(value.dtype)
            key = owner + ".weight"
        state[key] = value.detach().to("cpu").clone()
    config = model.config
    with torch.device("meta"):
        plain = Transformer(config)
    plain.load_state_dict(state, strict=not config.tie_embeddings, assign=True)
    if config.tie_embeddings:  # assign=True replaced the shared parameter: tie again
        plain.lm_head.weight = plain.model.embed_tokens.weight
    plain.init_rope()
    return plain


def save_adapter(model: nn.Module, directory: Path, cfg: LoRAConfig, base: str | Path) -> None:
    """The adapter alone, as PEFT saves it, next to the merged weights of a checkpoint."""
    state = _peft().get_peft_model_state_dict(model, adapter_name=ADAPTER)
    save_file({PEFT_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in state.items()},
              str(Path(directory) / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = peft_config(cfg, str(base)).to_dict()
    config["target_modules"] = sorted(config["target_modules"])  # a set: JSON wants a list
    (Path(directory) / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, default=str)
                                                  + "\n")


def load_adapter(model: nn.Module, directory: Path) -> None:
    """Adapter weights saved by `save_adapter` into a model `add_lora` adapted the same way."""
    state = load_file(str(Path(directory) / ADAPTER_WEIGHTS))
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()}
    result = _peft().set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{directory}: adapter does not fit the model: unexpected "
                         f"{sorted(unexpected)[:8]}")
