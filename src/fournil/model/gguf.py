"""A GGUF file (llama.cpp's format) of the Llama, Qwen2 or Qwen3 families as an
`ImportedModel`: its config from the `<arch>.*` keys, its tensors dequantised to float32 in
Hugging Face's names and layout, its tokenizer from the `tokenizer.*` keys (gguf_tokenizer.py).
Only the `gguf` package is used (no transformers, an optional extra and 3x slower at this).
This module is the import's API: the Hugging Face folder reader and the writer of the model
folder (imported.py) are re-exported here.

Two things are not in the file the way HF has them. llama.cpp's converter permutes the rows
of `attn_q`/`attn_k` of the `llama` architecture (Llama, Mistral, SmolLM2) from HF's rotate-half
RoPE layout to GGML's interleaved pairs; `unpermute` undoes it (`permute` redoes it for the
export). And a model is tied when the file has no `output.weight`.

Quantised types (Q4_0, Q4_1, Q5_x, Q8_0, K-quants, ...) are dequantised by
`gguf.quants.dequantize`: the imported model holds what the file holds, not the original
weights (a Q4_1 file gives Q4_1-rounded weights), which the lineage should say.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import gguf
import numpy as np
import torch

from fournil.model.config import HF_ARCHITECTURES, TransformerConfig
from fournil.model.folder import expected_keys
from fournil.model.gguf_tokenizer import tokenizer_from_gguf
from fournil.model.imported import ImportedModel as ImportedModel
from fournil.model.imported import read_hf_folder as read_hf_folder
from fournil.model.imported import save_imported as save_imported

# GGUF architecture of each family (Mistral converts to llama); the ones permuted
GGUF_ARCHITECTURES = {"qwen3": gguf.MODEL_ARCH.QWEN3, "qwen2": gguf.MODEL_ARCH.QWEN2,
                      "llama": gguf.MODEL_ARCH.LLAMA, "mistral": gguf.MODEL_ARCH.LLAMA}
PERMUTED = {gguf.MODEL_ARCH.LLAMA}
_SCALINGS = {"linear", "yarn"}  # rope.scaling.type values read (llama3 is a tensor: refused)
# the rope.scaling.* keys read (finetuned: informative only)
_SCALING_KEYS = {"type", "factor", "original_context_length", "finetuned"}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute: per head, HF's halves [x0 x2 ...; x1 x3 ...]
    to GGML's interleaved pairs (x0, x1), (x2, x3), ... (rows of q/k weights and biases)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute`."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _float32(value: object) -> float:
    """A GGUF f32 as the decimal it was written from (9.9999997e-06 -> 1e-05): the shortest
    repr of the float32, so a config written back reads like the original."""
    return float(str(np.float32(value)))


def read_gguf(path: str | Path) -> ImportedModel:
    """The model in a GGUF file: config, float32 HF state dict, tokenizer and its settings,
    and the file's `general.*` metadata for the lineage. Errors name the file."""
    path = Path(path)
    started = time.perf_counter()
    reader = gguf.GGUFReader(path)
    opened = time.perf_counter()

    def field(key: str, default: object = None) -> object:
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    try:
        config = TransformerConfig.from_hf(_hf_config(field, reader, path))
    except (KeyError, ValueError) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: {e}") from e
    state, types = _state_dict(reader, config, path)
    dequantized = time.perf_counter()
    tokenizer, tokenizer_config, ids = tokenizer_from_gguf(field, str(path))
    tokenizer_config["model_max_length"] = config.max_seq_len
    eos = [ids["eos"]] + [ids[k] for k in ("eot", "eom") if ids[k] not in (None, ids["eos"])]
    generation = {"bos_token_id": ids["bos"], "eos_token_id": eos[0] if len(eos) == 1 else eos,
                  "pad_token_id": ids["pad"]}
    metadata = {
        "format": "gguf",
        "architecture": HF_ARCHITECTURES[config.family],
        "gguf_architecture": field("general.architecture"),
        "model_type": config.family,
        "quantization": _quantization(field("general.file_type"), types),
        "repo_id": _repo_id(field("general.source.huggingface.repository")
                            or field("general.source.repo_url") or field("general.repo_url")),
        "name": field("general.name"),
        "license": field("general.license"),
        "license_name": field("general.license.name"),
        "license_link": field("general.license.link"),
        "organization": field("general.organization"),
        "finetune": field("general.finetune"),
        "basename": field("general.basename"),
        "size_label": field("general.size_label"),
        "url": field("general.url") or field("general.source.url")
        or field("general.source.repo_url"),
        "base_models": _numbered(field, "general.base_model"),
        "datasets": _numbered(field, "general.dataset"),
        "languages": field("general.languages") or [],
        "files": [path.name],
        "file_type": field("general.file_type"),
        "tensor_types": types,  # {GGML type: tensor count}: Q4_1 weights are Q4_1-rounded
        "seconds": {"read_header": round(opened - started, 3),
                    "dequantize": round(dequantized - opened, 3),
                    "tokenizer": round(time.perf_counter() - dequantized, 3)},
    }
    return ImportedModel(config, state, tokenizer, tokenizer_config,
                         {k: v for k, v in generation.items() if v is not None}, metadata)


def _quantization(file_type: object, types: dict[str, int]) -> str:
    """The file's type as llama.cpp names it (Q4_1, Q4_K_M, F16, ...): the declared file
    type, else the commonest type of its tensors."""
    try:
        return gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
    except (TypeError, ValueError):
        return max(types, key=types.get)


def _repo_id(url: object) -> str | None:
    """`org/name` from a Hugging Face repository URL or id."""
    if not url:
        return None
    match = re.search(r"(?:huggingface\.co/)?([\w.-]+/[\w.-]+)/?$", str(url))
    return match.group(1) if match else None


def _numbered(field, prefix: str) -> list[dict]:
    """`general.base_model.count` + `general.base_model.{i}.name`/... as a list of dicts."""
    items = []
    for i in range(int(field(f"{prefix}.count", 0) or 0)):
        item = {k: field(f"{prefix}.{i}.{k}") for k in ("name", "organization", "version",
                                                          "repo_url", "url", "license")}
        items.append({k: v for k, v in item.items() if v is not None})
    return items


def _hf_config(field, reader: gguf.GGUFReader, path: Path) -> dict:
    """The HF config.json the file's `<arch>.*` keys amount to, for `from_hf`."""
    arch = field("general.architecture")
    family = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}.get(arch)
    if family is None:
        raise ValueError(f"{path}: unsupported GGUF architecture {arch!r} (llama, qwen2, qwen3)")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise ValueError(f"{path}: RoPE frequencies stored as a tensor (Llama 3.1+'s llama3 "
                         "scaling) are not supported; import the Hugging Face folder instead")

    def k(name: str, default: object = None) -> object:
        return field(f"{arch}.{name}", default)

    for name in ("block_count", "embedding_length", "feed_forward_length",
                 "attention.head_count", "context_length"):
        if k(name) is None:
            raise ValueError(f"{path}: no {arch}.{name}")
    if isinstance(k("attention.head_count"), list) or isinstance(k("feed_forward_length"), list):
        raise ValueError(f"{path}: per-layer head counts or widths are not supported")
    heads, hidden = k("attention.head_count"), k("embedding_length")
    head_dim = k("attention.key_length") or k("rope.dimension_count") or hidden // heads
    for name in ("attention.value_length", "rope.dimension_count"):
        if k(name) not in (None, head_dim):
            raise ValueError(f"{path}: {arch}.{name} = {k(name)} differs from the head size "
                             f"{head_dim} (partial RoPE or different value heads: unsupported)")
    rope = {"rope_type": "default", "rope_theta": _float32(k("rope.freq_base", 10000.0))}
    scaling = k("rope.scaling.type")
    unread = sorted(key for key in reader.fields if key.startswith(f"{arch}.rope.scaling.")
                    and key.rsplit(".", 1)[1] not in _SCALING_KEYS)
    if unread:  # a YaRN variant's parameters, say: refused rather than ignored
        raise ValueError(f"{path}: unsupported RoPE scaling keys {unread}")
    if scaling not in (None, "none"):
        if scaling not in _SCALINGS:
            raise ValueError(f"{path}: unsupported {arch}.rope.scaling.type {scaling!r}")
        rope.update(rope_type=scaling, factor=_float32(k("rope.scaling.factor")))
        if k("rope.scaling.original_context_length"):
            rope["original_max_position_embeddings"] = int(
                k("rope.scaling.original_context_length"))
    hf = {
        # Mistral converts to `llama` and is told apart by its name only; its window is not
        # in the file (llama.cpp runs it with full attention, and so do we)
        "model_type": "mistral" if family == "llama" and "mistral" in str(
            field("general.name", "")).lower() else family,
        "vocab_size": k("vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data),
        "hidden_size": hidden,
        "num_hidden_layers": k("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": k("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "intermediate_size": k("feed_forward_length"),
        "max_position_embeddings": k("context_length"),
        "rms_norm_eps": _float32(k("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_parameters": rope,
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names or "blk.0.attn_output.bias" in names,
        "mlp_bias": "blk.0.ffn_up.bias" in names,
    }
    if hf["model_type"] == "mistral":
        hf["sliding_window"] = None
    return hf


def _state_dict(reader: gguf.GGUFReader, config: TransformerConfig, path: Path
                ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Every tensor the config expects, dequantised to float32 with HF's name and shape; an
    error for a tensor missing or one left over (something this model would not run)."""
    arch = GGUF_ARCHITECTURES[config.family]
    names = gguf.get_tensor_name_map(arch, config.num_layers)
    tensors = {t.name: t for t in reader.tensors}
    state: dict[str, torch.Tensor] = {}
    types: dict[str, int] = {}
    for hf_name in expected_keys(config):
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None or name not in tensors:
            raise ValueError(f"{path}: no tensor {name or hf_name} (for {hf_name})")
        t = tensors.pop(name)
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        w = w.reshape([int(n) for n in reversed(t.shape)])  # ggml's ne0 is HF's last dim
        if arch in PERMUTED and name.endswith((".attn_q.weight", ".attn_q.bias")):
            w = unpermute(w, config.num_heads)
        elif arch in PERMUTED and name.endswith((".attn_k.weight", ".attn_k.bias")):
            w = unpermute(w, config.num_kv_heads)
        # F32 tensors come back as views of the read-only file mapping: copy those
        w = w.astype(np.float32, copy=not (w.flags.writeable and w.flags.c_contiguous))
        state[hf_name] = torch.from_numpy(np.ascontiguousarray(w))
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    if tensors:
        raise ValueError(f"{path}: tensors this model does not use: {sorted(tensors)[:5]}")
    return state, types
