"""Export to GGUF, the single-file format llama.cpp (and Ollama, LM Studio, …) runs.

The file is what llama.cpp's own `convert_hf_to_gguf.py` writes for a Hugging Face checkpoint
of the model's family: architecture `qwen3` (fournil's own models), `qwen2`, or `llama` (Llama,
SmolLM2, Mistral), the same hyperparameter keys and tensor names, norms and other 1-D tensors
in f32 and the matrices in the requested type, the tokenizer as a `gpt2` (byte-level BPE)
vocabulary with its merges, token types, special ids, BOS setting and chat template. For the
`llama` architecture the rows of q and k are permuted to GGML's RoPE layout
(model/gguf.py's `permute`), as the converter does.

One choice is ours: the pre-tokenizer, which a GGUF names rather than describes. It is read
off the tokenizer (model/gguf_tokenizer.py): fournil's own split every digit on its own, then
apply GPT-2's regex, which is llama.cpp's `smollm` (`\\p{N}`, then the GPT-2 regex, no space
clean-up on decode), as SmolLM2's; Qwen2's and Llama 3's have their own (`gpt-2`, `qwen2` and
`llama3` cut runs of spaces before a digit otherwise than `smollm`: tests/export/test_gguf.py).
The converter could not choose for fournil's tokenizers: it recognises a pre-tokenizer by
hashing the tokens of a test text, which only works for the tokenizers of published models.

Quantisation is done here, with `gguf`'s numpy quantisers: q8_0 (8-bit, near lossless) and
q4_0 (4-bit). For q4_0 the tied embedding, which is also the output head, stays q8_0 (llama.cpp's
own quantiser keeps it at 6 bits for the same reason: errors there hit every logit). k-quants
(q4_k, q5_k, …) have no Python quantiser: make them from the f16 file with llama.cpp's
`llama-quantize`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gguf
import numpy as np
from tokenizers import Tokenizer

from fournil.model.config import TransformerConfig
from fournil.model.gguf import GGUF_ARCHITECTURES, PERMUTED, permute
from fournil.model.gguf_tokenizer import pre_tokenizer_name
from fournil.model.transformer import Transformer

log = logging.getLogger("fournil")

Q = gguf.GGMLQuantizationType
# dtype name -> (file type, type of the 2-D weight matrices)
GGUF_DTYPES: dict[str, tuple[gguf.LlamaFileType, gguf.GGMLQuantizationType]] = {
    "f32": (gguf.LlamaFileType.ALL_F32, Q.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
    "q4_0": (gguf.LlamaFileType.MOSTLY_Q4_0, Q.Q4_0),
}


def gguf_path(export_dir: str | Path, dtype: str) -> Path:
    """Where `fournil export --gguf DTYPE` writes: next to the HF files."""
    return Path(export_dir) / f"model-{dtype}.gguf"


def parse_dtypes(items: list[str] | str) -> list[str]:
    """`["f16,q8_0", "f32"]` -> `["f16", "q8_0", "f32"]`, each checked, order kept."""
    names = []
    for item in [items] if isinstance(items, str) else items:
        for name in filter(None, (n.strip().lower() for n in item.split(","))):
            if name not in GGUF_DTYPES:
                raise ValueError(f"unknown GGUF type {name!r} (choose from "
                                 f"{', '.join(GGUF_DTYPES)}; for k-quants run llama.cpp's "
                                 "llama-quantize on the f16 file)")
            if name not in names:
                names.append(name)
    return names


def _vocab(tokenizer: Tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings (byte-level, as in tokenizer.json) and types for ids 0..vocab_size-1.
    Ids the tokenizer does not use (an embedding table padded beyond the vocabulary) become
    `[PADi]` UNUSED entries, as convert_hf_to_gguf writes them."""
    by_id = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    if max(by_id) >= vocab_size:
        raise ValueError(f"the tokenizer has ids up to {max(by_id)} but the model only "
                         f"{vocab_size} embeddings")
    added = tokenizer.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            # special tokens are CONTROL: llama.cpp parses them in text only when asked to
            types.append(gguf.TokenType.CONTROL if added[i].special
                         else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _tensor_type(gguf_name: str, data: np.ndarray, dtype: str) -> gguf.GGMLQuantizationType:
    """llama.cpp's rule: 1-D tensors and norms in f32, matrices in the file's type."""
    if data.ndim <= 1 or gguf_name.endswith("_norm.weight"):
        return Q.F32
    qtype = GGUF_DTYPES[dtype][1]
    if qtype == Q.Q4_0 and gguf_name in ("token_embd.weight", "output.weight"):
        return Q.Q8_0  # the output head: keep it at 8 bits (see the module docstring)
    return qtype


def _quantize(data: np.ndarray, qtype: gguf.GGMLQuantizationType, name: str
              ) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """Block quantisation needs rows that are a multiple of the block size (32); a tensor
    that is not falls back to f16, as convert_hf_to_gguf does."""
    if qtype == Q.F32:
        return data, qtype
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError as e:
        log.warning("gguf: %s: %s, stored as f16", name, e)
        return gguf.quants.quantize(data, Q.F16), Q.F16


def _add_hyperparameters(writer: gguf.GGUFWriter, cfg: TransformerConfig,
                         arch: gguf.MODEL_ARCH) -> None:
    """The `<arch>.*` keys, as convert_hf_to_gguf writes them for the family; an error for
    what llama.cpp would not run as fournil does."""
    if arch == gguf.MODEL_ARCH.QWEN3 and (cfg.qkv_bias or cfg.o_bias):
        raise ValueError("llama.cpp's qwen3 architecture has no attention biases (it refuses "
                         "such a file)")
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    if arch != gguf.MODEL_ARCH.LLAMA or cfg.head_dim != cfg.hidden_size // cfg.num_heads:
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if arch == gguf.MODEL_ARCH.LLAMA:
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_rope_dimension_count(cfg.head_dim)
    scaling = cfg.rope_scaling or {}
    if scaling.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling["factor"])
    elif scaling.get("rope_type") == "yarn":
        yarn_defaults = {"beta_fast": 32, "beta_slow": 1, "truncate": True}
        if any(scaling.get(k, v) != v for k, v in yarn_defaults.items()) or any(
                k in scaling for k in ("attention_factor", "mscale", "mscale_all_dim")):
            raise ValueError("GGUF export of YaRN with non-default parameters is not supported")
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(scaling["factor"])
        writer.add_rope_scaling_orig_ctx_len(scaling["original_max_position_embeddings"])
    elif scaling:
        # llama.cpp takes llama3 scaling as a rope_freqs tensor of per-frequency divisors
        raise ValueError(f"GGUF export of rope_type {scaling['rope_type']!r} is not supported")
    if cfg.sliding_window is not None and cfg.sliding_window < cfg.max_seq_len:
        log.warning("gguf: llama.cpp runs the llama architecture without Mistral's sliding "
                    "window (%d): beyond it, its outputs differ from fournil's and "
                    "transformers'", cfg.sliding_window)


def export_gguf(model_dir: str | Path, out_path: str | Path, dtype: str = "f16",
                name: str | None = None, pre_tokenizer: str | None = None) -> Path:
    """Writes `out_path` from an HF export folder or a fournil checkpoint (each holds
    model.safetensors, config.json, tokenizer.json and tokenizer_config.json) and returns it.
    `pre_tokenizer` overrides the llama.cpp pre-tokenizer name read off the tokenizer.
    Written under a temporary name and renamed, so `out_path` is never half-written."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"unknown GGUF type {dtype!r} (choose from {', '.join(GGUF_DTYPES)})")
    for needed in ("tokenizer.json", "tokenizer_config.json"):
        if not (model_dir / needed).exists():
            raise FileNotFoundError(f"{model_dir}: no {needed} next to the model")
    model = Transformer.load(model_dir)
    cfg = model.config
    arch = GGUF_ARCHITECTURES[cfg.family]
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    pre_tokenizer = pre_tokenizer or pre_tokenizer_name(tokenizer)
    tokens, token_types = _vocab(tokenizer, cfg.vocab_size)
    if name is None:  # runs/<recipe>/export -> <recipe>
        name = model_dir.parent.name if model_dir.name == "export" else model_dir.name

    tmp = out_path.with_name(out_path.name + ".partial")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_file_type(GGUF_DTYPES[dtype][0])
        _add_hyperparameters(writer, cfg, arch)

        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre_tokenizer)
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        # merges, bos/eos/pad ids, add_bos and the chat template, read from the tokenizer
        # files by the same code convert_hf_to_gguf uses
        gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=cfg.vocab_size).add_to_gguf(
            writer, quiet=True)

        names = gguf.get_tensor_name_map(arch, cfg.num_layers)
        # weights_for_save() leaves out lm_head.weight when it is tied to the embeddings:
        # llama.cpp then uses token_embd as the output head, as for HF's tied models.
        for hf_name, tensor in model.weights_for_save(dtype=None).items():
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ValueError(f"{model_dir}: no GGUF name for tensor {hf_name}")
            data = tensor.float().numpy()
            if arch in PERMUTED and gguf_name.endswith((".attn_q.weight", ".attn_q.bias")):
                data = permute(data, cfg.num_heads)
            elif arch in PERMUTED and gguf_name.endswith((".attn_k.weight", ".attn_k.bias")):
                data = permute(data, cfg.num_kv_heads)
            data, qtype = _quantize(data, _tensor_type(gguf_name, data, dtype), gguf_name)
            writer.add_tensor(gguf_name, data, raw_dtype=qtype)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out_path)
    return out_path
