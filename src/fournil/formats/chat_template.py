"""Chats rendered with a model's own Jinja chat template, as `transformers` renders them.

fournil's own models speak ChatML with a BOS (chatml.py, which encodes without a template
engine). An imported base speaks its own: SmolLM2's is ChatML without a BOS and with a default
system message when the chat has none. Fine-tuning, evaluating and serving it must give it the
ids `apply_chat_template` gives, so the template is rendered here with Jinja in the same sandbox
and with the same options (`trim_blocks`, `lstrip_blocks`, `raise_exception`, `tojson`).

The assistant turns a model learns to write are found by rendering: the chat up to an answer
with the generation prompt is a prefix of the chat with the answer, and what the answer adds
(its text and its end-of-turn marker) is what the loss covers. A template for which that is not
so is refused rather than trained on wrongly. Unlike `chatml.ChatEncoder`, special-token strings
inside a message are read as the special tokens, as in `transformers`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from fournil.formats.chatml import CHAT_TEMPLATE, ChatEncoder

TEMPLATE_FILE = "chat_template.jinja"  # where transformers >= 4.43 saves it


def read_tokenizer_config(model_dir: str | Path) -> dict:
    """tokenizer_config.json, with the chat template from chat_template.jinja when the
    config does not hold it; {} when there is none (a fournil checkpoint)."""
    folder = Path(model_dir)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    template_file = folder / TEMPLATE_FILE
    if not config.get("chat_template") and template_file.exists():
        config["chat_template"] = template_file.read_text(encoding="utf-8")
    return config


def _raise(message: str) -> None:
    raise TemplateError(message)


def _token(config: dict, name: str) -> str | None:
    value = config.get(name)
    return value.get("content") if isinstance(value, dict) else value


class TemplateChatEncoder:
    """Token ids of a chat through a model's own chat template; the same interface as
    `chatml.ChatEncoder` (`encode`, `encode_with_mask`, `pad_id`)."""

    def __init__(self, tokenizer: Tokenizer, config: dict) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = lambda value, **kw: json.dumps(value, ensure_ascii=False, **kw)
        self.template = env.from_string(config["chat_template"])
        self.tokenizer = tokenizer
        self.specials = {name: _token(config, name) for name in
                         ("bos_token", "eos_token", "pad_token", "unk_token")}
        self.add_bos = bool(config.get("add_bos_token", False))
        bos_id = tokenizer.token_to_id(self.specials["bos_token"] or "")
        self._bos_ids = [bos_id] if self.add_bos and bos_id is not None else []
        # what pads packed rows (masked out of every loss): the pad token, else the end of turn
        pad = tokenizer.token_to_id(self.specials["pad_token"] or "")
        eos = tokenizer.token_to_id(self.specials["eos_token"] or "")
        self.pad_id = next((i for i in (pad, eos, bos_id) if i is not None), 0)

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        return self.template.render(messages=list(messages),
                                    add_generation_prompt=add_generation_prompt,
                                    **{k: v for k, v in self.specials.items() if v})

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        return self._bos_ids + self._ids(self.render(messages, add_generation_prompt))

    def encode_with_mask(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        """(ids, mask): 1 on what each assistant turn adds to the chat before it (its text and
        end-of-turn marker), 0 elsewhere."""
        pieces, done = [], ""
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = self.render(messages[:i], add_generation_prompt=True)
            answered = self.render(messages[:i + 1], add_generation_prompt=False)
            if not (prompt.startswith(done) and answered.startswith(prompt)):
                raise ValueError("the chat template does not render a chat as a prefix of the "
                                 "chat that answers it: its assistant turns cannot be found")
            pieces += [(prompt[len(done):], 0), (answered[len(prompt):], 1)]
            done = answered
        pieces.append((self.render(messages, add_generation_prompt=False)[len(done):], 0))
        ids, mask = list(self._bos_ids), [0] * len(self._bos_ids)
        for text, learn in pieces:
            piece = self._ids(text) if text else []
            ids += piece
            mask += [learn] * len(piece)
        return ids, mask


Encoder = ChatEncoder | TemplateChatEncoder  # what chat_encoder returns: either speaks chats


def chat_encoder(tokenizer: Tokenizer, model_dir: str | Path) -> Encoder:
    """The encoder a model folder's chats need: fournil's ChatML for its own models (no
    template, or fournil's), the folder's own template otherwise."""
    config = read_tokenizer_config(model_dir)
    template = config.get("chat_template")
    if template is None or template == CHAT_TEMPLATE:
        return ChatEncoder(tokenizer)
    if not isinstance(template, str):  # a dict of named templates: the default one
        raise ValueError(f"{model_dir}: named chat templates are not supported")
    return TemplateChatEncoder(tokenizer, config)
