"""Byte-level BPE tokenizers in llama.cpp's terms: the tokenizer a GGUF file describes (its
`tokenizer.ggml.*` keys) as a `tokenizers.Tokenizer`, and, the other way, the name of the
pre-tokenizer llama.cpp must apply for a tokenizer.json to cut text where it does.

A GGUF does not store how text is cut before the merges, only a name (`tokenizer.ggml.pre`)
for which llama.cpp has code. So the table below holds, for each name we support, the
`tokenizers` pre-tokenizer that does the same, the one each model's own tokenizer.json has:
`smollm` (SmolLM2, and fournil's own tokenizers) splits every digit on its own, then applies
GPT-2's regex; `qwen2` and `llama-bpe` (Llama 3) have their own regexes. transformers' GGUF
loader lacks `smollm` and falls back on plain GPT-2, which cuts runs of spaces before a digit
otherwise than llama.cpp and SmolLM2's real tokenizer (frequent in OCR'd tables).

SentencePiece vocabularies (`tokenizer.ggml.model = llama`: Llama 2, Mistral 7B) are another
algorithm, refused for now.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

# llama.cpp's gguf TokenType values (gguf.TokenType; kept here so that reading a tokenizer
# needs only the metadata)
CONTROL, USER_DEFINED = 3, 4

_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(use_regex: bool) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)


def _split_then_bytes(pattern: str) -> Callable[[], pre_tokenizers.PreTokenizer]:
    return lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"), _byte_level(False)])


# llama.cpp pre-tokenizer name -> the same cut in `tokenizers`
PRE_TOKENIZERS: dict[str, Callable[[], pre_tokenizers.PreTokenizer]] = {
    "smollm": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), _byte_level(True)]),
    "gpt-2": lambda: _byte_level(True),
    "qwen2": _split_then_bytes(_QWEN2_SPLIT),
    "llama-bpe": _split_then_bytes(_LLAMA3_SPLIT),
}
_ALIASES = {"llama3": "llama-bpe", "llama-v3": "llama-bpe"}
# llama.cpp (and Llama 3's tokenizer.json) take a whole pre-token that is in the vocabulary as
# one token before trying merges
_IGNORE_MERGES = {"llama-bpe"}
# llama.cpp adds a BOS when a file does not say: per pre-tokenizer
_ADD_BOS_DEFAULT = {"llama-bpe"}


def _signature(pre: dict | None) -> list:
    """What decides where a pre-tokenizer cuts (its parts, regexes, digit and byte options),
    without the options that only move offsets (trim_offsets)."""
    if pre is None:
        return []
    if pre["type"] == "Sequence":
        return [s for p in pre["pretokenizers"] for s in _signature(p)]
    keep = {"Split": ("pattern", "behavior", "invert"), "Digits": ("individual_digits",),
            "ByteLevel": ("add_prefix_space", "use_regex")}.get(pre["type"])
    if keep is None:
        return [json.dumps(pre, sort_keys=True)]
    return [(pre["type"], *(json.dumps(pre.get(k), sort_keys=True) for k in keep))]


def _pre_tokenizer_json(pre: pre_tokenizers.PreTokenizer) -> dict:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    return json.loads(tok.to_str())["pre_tokenizer"]


def pre_tokenizer_name(tokenizer: Tokenizer) -> str:
    """The llama.cpp pre-tokenizer that cuts text like this tokenizer (for a GGUF export);
    an error naming the tokenizer's pre-tokenizer when none of ours does."""
    data = json.loads(tokenizer.to_str())
    if data["model"].get("type") != "BPE" or data.get("decoder", {}).get("type") != "ByteLevel":
        raise ValueError("only byte-level BPE tokenizers go to GGUF (model "
                         f"{data['model'].get('type')}, decoder "
                         f"{(data.get('decoder') or {}).get('type')}); SentencePiece ones are "
                         "not supported yet")
    if data.get("normalizer") is not None:
        kinds = {"NFC"}  # Qwen2's: changes nothing in text that is already NFC, llama.cpp's
        if data["normalizer"].get("type") not in kinds:
            raise ValueError(f"tokenizer normalizer {data['normalizer'].get('type')} has no "
                             "llama.cpp counterpart")
    signature = _signature(data.get("pre_tokenizer"))
    for name, build in PRE_TOKENIZERS.items():
        if _signature(_pre_tokenizer_json(build())) == signature:
            return name
    raise ValueError(f"no llama.cpp pre-tokenizer known to cut text like this tokenizer's "
                     f"({json.dumps(data.get('pre_tokenizer'))[:300]}); known: "
                     f"{', '.join(PRE_TOKENIZERS)}")


def tokenizer_from_gguf(field: Callable[..., object], where: str
                        ) -> tuple[Tokenizer, dict, dict]:
    """(tokenizer, tokenizer_config, generation ids) from a GGUF's `tokenizer.*` keys, read
    with `field(key, default=None)`. `where` names the file in errors."""
    kind = field("tokenizer.ggml.model")
    if kind == "llama":
        raise ValueError(f"{where}: SentencePiece tokenizer (tokenizer.ggml.model = llama: Llama "
                         "2, Mistral 7B, ...) is not supported yet; import the model's Hugging "
                         "Face folder instead")
    if kind != "gpt2":
        raise ValueError(f"{where}: unsupported tokenizer.ggml.model {kind!r} (only gpt2, "
                         "byte-level BPE)")
    pre = field("tokenizer.ggml.pre")
    pre = _ALIASES.get(pre, pre)
    if pre not in PRE_TOKENIZERS:  # absent: llama.cpp's "default", a cut of its own
        raise ValueError(f"{where}: unsupported tokenizer.ggml.pre {pre!r} (supported: "
                         f"{', '.join(PRE_TOKENIZERS)})")
    tokens: list[str] = list(field("tokenizer.ggml.tokens"))
    types = list(field("tokenizer.ggml.token_type") or [1] * len(tokens))
    if len(types) != len(tokens):
        raise ValueError(f"{where}: {len(tokens)} tokens but {len(types)} token types")
    merges = [tuple(m.split(" ", 1)) for m in field("tokenizer.ggml.merges") or []]
    if not merges:
        raise ValueError(f"{where}: a gpt2 tokenizer without tokenizer.ggml.merges")
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               fuse_unk=False, byte_fallback=False,
                               ignore_merges=pre in _IGNORE_MERGES))
    tok.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    # control tokens (<|im_start|>, ...) are matched whole in text and special; user-defined
    # ones (<think>, ...) matched whole but decoded as text: llama.cpp's rules
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types, strict=True) if ty == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, ty in zip(tokens, types, strict=True) if ty == USER_DEFINED])
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise ValueError(f"{where}: the tokenizer's added tokens are not all in its vocabulary")

    def token(role: str) -> str | None:
        i = field(f"tokenizer.ggml.{role}_token_id")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    bos, eos = token("bos"), token("eos")
    add_bos = bool(field("tokenizer.ggml.add_bos_token", pre in _ADD_BOS_DEFAULT))
    add_eos = bool(field("tokenizer.ggml.add_eos_token", False))
    if (add_bos and bos is None) or (add_eos and eos is None):
        raise ValueError(f"{where}: adds a BOS/EOS token it does not name")
    if add_bos or add_eos:  # what llama.cpp adds around a text, as the tokenizer's template
        added = [t for t, on in ((bos, add_bos), (eos, add_eos)) if on]
        single = " ".join(([bos] if add_bos else []) + ["$A"] + ([eos] if add_eos else []))
        tok.post_processor = processors.TemplateProcessing(
            single=single, pair=f"{single} {single.replace('$A', '$B')}",
            special_tokens=[(t, tok.token_to_id(t)) for t in added])
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos, "eos_token": eos, "pad_token": token("padding"),
        "unk_token": token("unknown"),
        "add_bos_token": add_bos, "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "chat_template": field("tokenizer.chat_template"),
    }
    ids = {role: field(f"tokenizer.ggml.{key}_token_id")
           for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"),
                             ("eot", "eot"), ("eom", "eom"))}
    return tok, config, ids
