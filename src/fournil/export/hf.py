"""Export to a Hugging Face folder that `transformers` (Qwen3ForCausalLM), vLLM and llama.cpp's
converter load as is: config.json, model.safetensors, the tokenizer files, generation_config.json
and the model card as README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer

from fournil.model.folder import write_hf_folder
from fournil.model.transformer import Transformer

DOCUMENT_TOKEN = "<|endoftext|>"  # document boundary: bos, eos and pad
TURN_END_TOKEN = "<|im_end|>"  # end of a chat turn: a second stop token for generation

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def special_token_ids(tokenizer_dir: str | Path) -> dict[str, int | None]:
    """bos/eos/pad/im_end ids, read from the tokenizer files rather than assumed: the token
    strings come from tokenizer_config.json (default `<|endoftext|>`), their ids from
    tokenizer.json's `added_tokens`."""
    tokenizer_dir = Path(tokenizer_dir)
    tokenizer = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    config_path = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}

    def token_id(role: str) -> int:
        token = config.get(role) or DOCUMENT_TOKEN
        if isinstance(token, dict):  # an AddedToken serialised as {"content": ...}
            token = token["content"]
        if token not in ids:
            raise ValueError(f"{tokenizer_dir}: {role} {token!r} is not an added token "
                             "of tokenizer.json")
        return ids[token]

    return {"bos": token_id("bos_token"), "eos": token_id("eos_token"),
            "pad": token_id("pad_token"), "im_end": ids.get(TURN_END_TOKEN)}


def generation_config(ids: dict[str, int | None], generation: dict | None) -> dict:
    """generation_config.json: stop at a document end or a turn end; sampling defaults from the
    recipe's `[generate]` section (keys other than the sampling ones are ignored)."""
    generation = generation or {}
    eos = [ids["eos"]]
    if ids["im_end"] is not None and ids["im_end"] != ids["eos"]:
        eos.append(ids["im_end"])
    config: dict = {"bos_token_id": ids["bos"], "eos_token_id": eos, "pad_token_id": ids["pad"]}
    temperature = generation.get("temperature", 0.8)
    if temperature > 0:
        config["do_sample"] = True
        config["temperature"] = temperature
        config["top_k"] = generation.get("top_k", 0)
        config["top_p"] = generation.get("top_p", 1.0)
    else:
        # transformers rejects sampling parameters on a greedy config, so write none
        config["do_sample"] = False
    if "max_new_tokens" in generation:
        config["max_new_tokens"] = generation["max_new_tokens"]
    return config


def export_hf(model: Transformer, out_dir: str | Path, tokenizer_dir: str | Path,
              model_card: str, generation: dict | None = None,
              dtype: str | torch.dtype = "float32") -> Path:
    """Writes the HF folder `out_dir` (the model's family: Qwen3 for fournil's own, the
    base's class for an imported one) and returns it. Built in `<out_dir>.partial` and renamed
    at the end, so `out_dir` is either the previous export or a complete new one."""
    out_dir, tokenizer_dir = Path(out_dir), Path(tokenizer_dir)
    torch_dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
    dtype_name = str(torch_dtype).removeprefix("torch.")
    if dtype_name not in _DTYPES:
        raise ValueError(f"unsupported export dtype {dtype!r} ({', '.join(_DTYPES)})")

    ids = special_token_ids(tokenizer_dir)
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    n_tokens = tokenizer.get_vocab_size(with_added_tokens=True)
    if n_tokens > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {n_tokens} tokens but the model only "
                         f"{model.config.vocab_size} embeddings")

    hf_config = model.config.to_hf(ids["bos"], ids["eos"], ids["pad"], dtype=dtype_name)
    return write_hf_folder(out_dir, hf_config, model.weights_for_save(torch_dtype), {
        "tokenizer.json": tokenizer_dir / "tokenizer.json",
        "tokenizer_config.json": tokenizer_dir / "tokenizer_config.json",
        "generation_config.json": generation_config(ids, generation),
        "README.md": model_card,
    })
