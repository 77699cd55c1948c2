"""Any transformers causal LM, next to fournil's own: telling them apart, loading one (a folder
or a `.gguf` file) for generation, and the ids its generation stops at. Used where fournil runs
models it did not train: the server, the synth stage's hf generator, the eval harness."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fournil.core.device import pick_device
from fournil.formats.chatml import CHAT_TEMPLATE
from fournil.model.transformer import FORMAT_KEY


def is_fournil_model(path: str | Path) -> bool:
    """A fournil checkpoint (our config.json), export (our ChatML template) or a model made
    from an imported base (its lineage.json): the folders `ServedModel` serves. Anything else
    goes through transformers, our tokenizer's folder with another architecture's config too
    (a Llama trained on it is no shape our Transformer reads)."""
    path = Path(path)
    if not path.is_dir():
        return False
    config = path / "config.json"
    data = json.loads(config.read_text(encoding="utf-8")) if config.exists() else {}
    if FORMAT_KEY in data:
        return True
    if (path / "lineage.json").exists():  # an open base fournil took in, or a model made from
        return True  # one: its family's config, which fournil's Transformer reads
    if data.get("model_type", "qwen3") != "qwen3":
        return False
    tokenizer_config = path / "tokenizer_config.json"
    return tokenizer_config.exists() and json.loads(
        tokenizer_config.read_text(encoding="utf-8")).get("chat_template") == CHAT_TEMPLATE


def load_hf_model(path: str | Path, device: str = "cpu") -> tuple:
    """(model, tokenizer) of a transformers causal LM, from a folder or a `.gguf` file (which
    transformers dequantises to float32, and whose tokenizer it converts: tens of seconds
    for a 135M model). The tokenizer must have a chat template."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise RuntimeError("serving or generating with a transformers model needs the hf "
                           "extra: pip install 'fournil[hf]'") from e
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return _load_gguf(path, device)
    if path.is_dir() and (path / "config.json").exists():
        folder, extra = path, {}
    else:
        raise FileNotFoundError(f"{path}: neither a model folder with a config.json nor a "
                                ".gguf file")
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{path}: the tokenizer has no chat template, so chats cannot be "
                         "rendered the way the model expects (use a chat/instruct model)")
    model = AutoModelForCausalLM.from_pretrained(folder, **extra)
    model.to(pick_device(device)).eval()
    return model, tokenizer


def _load_gguf(path: Path, device: str) -> tuple:
    """A .gguf through transformers, read from the file alone: transformers would take the
    tokenizer files of the folder it sits in (a fournil export's, beside its GGUFs) over the
    GGUF's, and it does not read qwen3's head_dim, which fournil's models set freely."""
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    fields = gguf.GGUFReader(path).fields
    arch = fields["general.architecture"].contents()
    head_dim = fields.get(f"{arch}.attention.key_length")
    with tempfile.TemporaryDirectory() as alone:
        (Path(alone) / path.name).symlink_to(path.resolve())
        tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file=path.name)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{path}: the tokenizer has no chat template, so chats cannot be "
                             "rendered the way the model expects (use a chat/instruct model)")
        config = AutoConfig.from_pretrained(alone, gguf_file=path.name)
        if head_dim is not None and hasattr(config, "head_dim"):
            config.head_dim = int(head_dim.contents())
        model = AutoModelForCausalLM.from_pretrained(alone, gguf_file=path.name, config=config)
    model.to(pick_device(device)).eval()
    return model, tokenizer


def hf_stop_ids(model: object, tokenizer: object) -> frozenset[int]:
    """The generation config's eos ids (an instruct model's end of turn) and the tokenizer's
    eos: what `generate` stops at."""
    eos = getattr(model.generation_config, "eos_token_id", None)  # type: ignore[attr-defined]
    ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if tokenizer.eos_token_id is not None:  # type: ignore[attr-defined]
        ids.add(tokenizer.eos_token_id)  # type: ignore[attr-defined]
    return frozenset(ids)
