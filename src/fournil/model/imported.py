"""An open model brought in from outside: what an import reads (a Hugging Face folder here, a
GGUF file in gguf.py) and the fournil model folder it becomes.

Both readers give an `ImportedModel`: the config (its family's switches), a float32 state
dict with HF names, the base's own tokenizer and its settings (special tokens, BOS, chat
template), its generation settings, and what the files say about the model (name, license
as written, declared base models and data) for the lineage. `save_imported` writes it as an
HF folder of the base's own class, which fournil (`Transformer.load`, `load_tokenizer`) and
transformers read alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer, processors

from fournil.model.config import HF_ARCHITECTURES, TransformerConfig
from fournil.model.folder import read_config, read_weights, weight_files, write_hf_folder
from fournil.model.transformer import Transformer

_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")


@dataclass
class ImportedModel:
    config: TransformerConfig
    state_dict: dict[str, torch.Tensor]  # float32, HF names, no head when tied
    tokenizer: Tokenizer
    # bos/eos/pad/unk_token (strings or None), add_bos_token, add_eos_token, chat_template,
    # model_max_length, tokenizer_class: what tokenizer_config.json says
    tokenizer_config: dict
    generation_config: dict  # bos/eos/pad_token_id (eos may be a list), as the base gives them
    # format (hf | gguf), architecture, model_type, name, license (as written), base_models,
    # datasets, files (read), and what the format adds (quantisation types, timings)
    metadata: dict = field(default_factory=dict)


def read_hf_folder(path: str | Path) -> ImportedModel:
    """A Hugging Face model folder of one of the four families: config.json, safetensors
    (one file or shards, any float dtype: read as float32), tokenizer.json and its settings."""
    folder = Path(path)
    hf = json.loads((folder / "config.json").read_text(encoding="utf-8")) \
        if (folder / "config.json").exists() else {}
    config = read_config(folder)
    files = weight_files(folder)
    state = read_weights(folder, config, dtype=torch.float32)
    if not (folder / "tokenizer.json").exists():
        raise FileNotFoundError(f"{folder}: no tokenizer.json (a SentencePiece tokenizer.model "
                                "alone is not supported: save the tokenizer with transformers "
                                "first, AutoTokenizer.from_pretrained(...).save_pretrained)")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer_config = _tokenizer_config(folder, tokenizer, config)
    generation = _read_json(folder / "generation_config.json") or {
        k: hf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if hf.get(k) is not None}
    card = front_matter(folder / "README.md")
    name_or_path = str(hf.get("_name_or_path") or "")
    metadata = {
        "format": "hf",
        "architecture": (hf.get("architectures") or [HF_ARCHITECTURES[config.family]])[0],
        "model_type": config.family,
        "quantization": None,
        "stored_dtypes": _stored_dtypes(files),
        # what save_pretrained records of the hub id (a local path is no id)
        "repo_id": name_or_path if name_or_path.count("/") == 1
        and not Path(name_or_path).exists() else None,
        "name": card.get("model_name") or name_or_path or folder.name,
        "license": card.get("license"),
        "license_name": card.get("license_name"),
        "license_link": card.get("license_link"),
        "base_models": _as_list(card.get("base_model")),
        "datasets": _as_list(card.get("datasets")),
        "languages": _as_list(card.get("language")),
        "license_files": sorted(p.name for p in folder.glob("LICEN[CS]E*")),
        "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
        "weight_files": [p.name for p in files],
        "tokenizer_class": tokenizer_config.pop("base_tokenizer_class", None),
    }
    return ImportedModel(config, state, tokenizer, tokenizer_config, generation, metadata)


def _stored_dtypes(files: list[Path]) -> list[str]:
    """The dtypes the weight files store (BF16, F32, ...), from their headers."""
    dtypes = set()
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            dtypes |= {f.get_slice(name).get_dtype() for name in f.keys()}
    return sorted(dtypes)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _as_list(value: object) -> list:
    return [] if value in (None, "") else value if isinstance(value, list) else [value]


def _tokenizer_config(folder: Path, tokenizer: Tokenizer, config: TransformerConfig) -> dict:
    """The base's tokenizer settings, normalised: token strings (not AddedToken dicts), the
    chat template wherever transformers saved it, and `add_bos_token` as the tokenizer
    actually behaves (tokenizer.json is what fournil and the export run)."""
    raw = _read_json(folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")
    settings: dict = {"tokenizer_class": "PreTrainedTokenizerFast",
                      "base_tokenizer_class": raw.get("tokenizer_class")}
    for role in _ROLES:
        value = raw.get(role, special_map.get(role))
        settings[role] = value.get("content") if isinstance(value, dict) else value
    template = raw.get("chat_template")
    if template is None and (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template is None:
        template = _read_json(folder / "chat_template.json").get("chat_template")
    if isinstance(template, list):  # several named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    settings["chat_template"] = template
    bos = settings["bos_token"]
    if raw.get("add_bos_token") and bos is not None and not _adds_bos(tokenizer, bos):
        # Llama-style classes add the BOS from this flag, not from tokenizer.json: make the
        # tokenizer itself add it, so every reader of tokenizer.json agrees
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tokenizer.token_to_id(bos))])
    settings["add_bos_token"] = bos is not None and _adds_bos(tokenizer, bos)
    settings["add_eos_token"] = bool(raw.get("add_eos_token", False))
    length = raw.get("model_max_length")
    settings["model_max_length"] = (length if isinstance(length, int)
                                    and length <= config.max_seq_len else config.max_seq_len)
    settings["clean_up_tokenization_spaces"] = bool(raw.get("clean_up_tokenization_spaces",
                                                            False))
    return settings


def _adds_bos(tokenizer: Tokenizer, bos: str) -> bool:
    bos_id = tokenizer.token_to_id(bos)
    return bos_id is not None and tokenizer.encode("a").ids[:1] == [bos_id]


def front_matter(readme: Path) -> dict:
    """The YAML front matter of a model card (README.md) as far as lineage needs it: top-level
    `key: value` and `key:` followed by `- item` lines. Enough for license, base_model,
    datasets and language, without a YAML dependency."""
    if not readme.exists():
        return {}
    lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    data: dict = {}
    key = None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if line.startswith((" ", "\t", "-")) and key is not None:
            item = line.strip()
            if item.startswith("- "):
                value = data.get(key)
                data[key] = ([] if value in (None, "") else _as_list(value)) + [
                    _unquote(item[2:])]
            continue
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            key = key.strip()
            data[key] = _unquote(value.strip()) if value.strip() else None
    return data


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def special_ids(imported: ImportedModel) -> dict[str, int | list[int] | None]:
    """bos/eos/pad ids for config.json: the generation config's, else the tokenizer's."""
    gen, tok = imported.generation_config, imported.tokenizer

    def token_id(role: str) -> int | None:
        token = imported.tokenizer_config.get(f"{role}_token")
        return tok.token_to_id(token) if token is not None else None

    return {role: gen.get(f"{role}_token_id", token_id(role)) for role in ("bos", "eos", "pad")}


def save_imported(imported: ImportedModel, folder: str | Path) -> Path:
    """The imported model as a fournil model folder, which is an HF folder of the base's own
    class (config.json, float32 model.safetensors, tokenizer.json, tokenizer_config.json with
    the base's chat template, generation_config.json), written atomically."""
    model = Transformer.from_state_dict(imported.config, imported.state_dict)
    ids = special_ids(imported)
    eos = ids["eos"][0] if isinstance(ids["eos"], list) and ids["eos"] else ids["eos"]
    hf_config = imported.config.to_hf(ids["bos"], eos, ids["pad"], dtype="float32")
    n_tokens = imported.tokenizer.get_vocab_size(with_added_tokens=True)
    if n_tokens > imported.config.vocab_size:
        raise ValueError(f"the tokenizer has {n_tokens} tokens but the model only "
                         f"{imported.config.vocab_size} embeddings")
    return write_hf_folder(folder, hf_config, model.weights_for_save(torch.float32), {
        "tokenizer.json": imported.tokenizer.to_str(pretty=True),
        "tokenizer_config.json": imported.tokenizer_config,
        "generation_config.json": imported.generation_config,
    })
