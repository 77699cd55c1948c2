"""Byte-level BPE trained on the curated corpus with HF `tokenizers`.

Digits are split one by one (better arithmetic, no arbitrary number tokens), and three
special tokens sit at fixed ids: `<|endoftext|>` (0) marks document boundaries and serves
as BOS/EOS/PAD, `<|im_start|>` (1) and `<|im_end|>` (2) frame ChatML turns. The tokenizer's
post-processor prepends `<|endoftext|>`, so `transformers`, llama.cpp and fournil all see a
document start the same way the model saw it in training.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from fournil.formats.chatml import CHAT_TEMPLATE, ENDOFTEXT, IM_END, IM_START

SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
# what a tokenizer is on disk (chat_template.jinja: where transformers saves a base's template)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def build_untrained() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                    show_progress: bool = True) -> Tokenizer:
    tok = build_untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(ENDOFTEXT)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{ENDOFTEXT} $A", pair=f"{ENDOFTEXT} $A {ENDOFTEXT} $B",
        special_tokens=[(ENDOFTEXT, bos)],
    )
    return tok


def tokenizer_config(max_length: int) -> dict:
    """`tokenizer_config.json` for `transformers.AutoTokenizer`."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "add_bos_token": True,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "extra_special_tokens": [IM_START, IM_END],
    }


def save_tokenizer(tok: Tokenizer, directory: Path, max_length: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(max_length), indent=2, ensure_ascii=False) + "\n")


def load_tokenizer(directory_or_file: str | Path) -> Tokenizer:
    path = Path(directory_or_file)
    return Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))


def token_byte_lengths(tok: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for; 0 for special tokens (bits-per-byte needs this).

    In byte-level BPE each character of a token's string stands for exactly one byte.
    """
    lengths = np.zeros(tok.get_vocab_size(), dtype=np.int32)
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    for token, idx in tok.get_vocab().items():
        lengths[idx] = 0 if token in special else len(token)
    return lengths


def capped(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """The texts, stopping once `max_chars` characters have been yielded."""
    seen = 0
    for text in texts:
        if seen >= max_chars:
            return
        yield text[: max_chars - seen]
        seen += len(text)
