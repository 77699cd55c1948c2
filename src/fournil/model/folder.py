"""A model on disk: `config.json` (ours, or a Hugging Face one of the four families) and its
safetensors weights, read strictly; and an HF folder written atomically.

Real bases are not always one `model.safetensors`: large ones are sharded (with a
`model.safetensors.index.json`), most are stored in bfloat16, and some tied models still ship
an `lm_head.weight` equal to the embeddings. All of that is read here, and anything that does
not fit the config (a missing or extra tensor, a tied head that differs) is an error naming
the folder, never a model loaded half right.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fournil.model.config import TransformerConfig

# `config.json` of our own checkpoints carries this key (the checkpoint format version), which
# tells it apart from an HF export's config.json.
FORMAT_KEY = "fournil"
FORMAT_VERSION = 1

WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"


def read_config(directory: str | Path) -> TransformerConfig:
    """The TransformerConfig of a checkpoint folder (ours) or an HF Qwen3, Qwen2, Llama or
    Mistral folder."""
    path = Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no config.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    if FORMAT_KEY in data:
        data = dict(data)
        version = data.pop(FORMAT_KEY)
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: checkpoint format {version}, expected {FORMAT_VERSION}")
        return TransformerConfig.from_dict(data)
    try:
        return TransformerConfig.from_hf(data)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: neither a fournil checkpoint nor a model fournil can run: "
                         f"{e}") from e


def expected_keys(config: TransformerConfig) -> list[str]:
    """The state dict's names for this config: HF's, which the four families share; only
    which ones are present differs (QK-norm, biases, an untied head)."""
    keys = ["model.embed_tokens.weight", "model.norm.weight"]
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        keys += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        attn = ["q_proj", "k_proj", "v_proj", "o_proj"]
        attn += ["q_norm", "k_norm"] if config.qk_norm else []
        keys += [p + f"self_attn.{n}.weight" for n in attn]
        keys += [p + f"self_attn.{n}_proj.bias" for n in "qkv" if config.qkv_bias]
        keys += [p + "self_attn.o_proj.bias"] if config.o_bias else []
        mlp = ("gate_proj", "up_proj", "down_proj")
        keys += [p + f"mlp.{n}.weight" for n in mlp]
        keys += [p + f"mlp.{n}.bias" for n in mlp if config.mlp_bias]
    if not config.tie_embeddings:
        keys.append("lm_head.weight")
    return keys


def weight_files(directory: Path) -> list[Path]:
    """`model.safetensors`, or the shards its index names (each once, in order)."""
    if (directory / WEIGHTS).exists():
        return [directory / WEIGHTS]
    if (directory / SHARD_INDEX).exists():
        index = json.loads((directory / SHARD_INDEX).read_text(encoding="utf-8"))
        names = list(dict.fromkeys(index.get("weight_map", {}).values()))
        missing = [n for n in names if not (directory / n).exists()]
        if not names or missing:
            raise FileNotFoundError(f"{directory / SHARD_INDEX}: shards missing: "
                                    f"{missing or 'the index names none'}")
        return [directory / n for n in names]
    if list(directory.glob("*.bin")) or list(directory.glob("*.pth")):
        raise ValueError(f"{directory}: only pickled weights (.bin/.pth); fournil reads "
                         "safetensors (convert with transformers' save_pretrained)")
    raise FileNotFoundError(f"{directory}: no {WEIGHTS} nor {SHARD_INDEX}")


def read_weights(directory: str | Path, config: TransformerConfig,
                 device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a folder, checked against the config's names; a tied model's extra
    `lm_head.weight` is checked equal to the embeddings and dropped. `dtype=None` keeps the
    stored dtype, or float32 when the files mix dtypes (a model runs in one)."""
    directory = Path(directory)
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for name in f.keys():
                if name in state:
                    raise ValueError(f"{path}: tensor {name} is in two shards")
                state[name] = f.get_tensor(name)
    if config.tie_embeddings and "lm_head.weight" in state:
        head = state.pop("lm_head.weight")
        if not torch.equal(head, state.get("model.embed_tokens.weight", head)):
            raise ValueError(f"{directory}: tie_word_embeddings is true but lm_head.weight "
                             "differs from model.embed_tokens.weight")
    expected = set(expected_keys(config))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(f"{directory}: checkpoint does not match its config: "
                         f"missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    if dtype is None and len({t.dtype for t in state.values()}) > 1:
        dtype = torch.float32
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    return state


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_hf_folder(out_dir: str | Path, hf_config: dict, weights: dict[str, torch.Tensor],
                    files: dict[str, str | dict | Path]) -> Path:
    """An HF folder: `config.json`, `model.safetensors` and `files` (name -> text, a dict
    written as JSON, or a file copied as is). Built in `<out_dir>.partial` and swapped in at
    the end, so `out_dir` is either the previous folder or a complete new one."""
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted write
    partial.mkdir(parents=True)
    write_json(partial / "config.json", hf_config)
    save_file(weights, str(partial / WEIGHTS), metadata={"format": "pt"})
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, partial / name)
        elif isinstance(content, dict):
            write_json(partial / name, content)
        else:
            (partial / name).write_text(content, encoding="utf-8")
    # a directory cannot be replaced by rename while it is not empty: move the old one aside
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out_dir, old)
        os.replace(partial, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(partial, out_dir)
    return out_dir
