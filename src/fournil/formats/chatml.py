"""Chats as the model sees them: ChatML, its control tokens and the Jinja template fournil's
tokenizer ships (`tokenizer_config.json`'s `chat_template`, see `fournil.tokenizer.train`).

`render_chatml` is that Jinja template written as a function (the tests check it renders
what `transformers`' `apply_chat_template` does), so serving needs no template engine.
`encode_chat` tokenizes a chat so that text inside a message can never become a control
token: a user who types `<|im_end|>` gets those characters, not the end of their turn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

ROLES = ("system", "user", "assistant")
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# ChatML, as Qwen and SmolLM use it: what `transformers` and llama.cpp render for chat.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def render_chatml(messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """The chat as text, exactly as the tokenizer's chat template renders it."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def check_chat_template(model_dir: str | Path) -> None:
    """Raises ValueError unless the folder's tokenizer uses fournil's ChatML template (the
    only one `render_chatml` renders); a folder without tokenizer_config.json is a checkpoint
    of ours and has it by construction."""
    config_path = Path(model_dir) / "tokenizer_config.json"
    if not config_path.exists():
        return
    template = json.loads(config_path.read_text(encoding="utf-8")).get("chat_template")
    if template != CHAT_TEMPLATE:
        raise ValueError(f"{config_path}: the chat_template is not fournil's ChatML template; "
                         "chat would be rendered differently from what the model expects")


class ChatEncoder:
    """Token ids of a chat: BOS, then per message `<|im_start|>role\\ncontent<|im_end|>\\n`,
    then `<|im_start|>assistant\\n`. The same ids as encoding `render_chatml(messages)` with
    the tokenizer, except that special-token strings inside the text stay plain text."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        # A copy that reads `<|im_end|>` in text as characters; the shared tokenizer keeps
        # parsing them, as a raw completion prompt may use ChatML on purpose.
        self._plain = Tokenizer.from_str(tokenizer.to_str())
        self._plain.encode_special_tokens = True
        ids = {t: tokenizer.token_to_id(t) for t in (ENDOFTEXT, IM_START, IM_END)}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"the tokenizer has no {', '.join(missing)} token: it cannot chat")
        self.bos, self.im_start, self.im_end = ids[ENDOFTEXT], ids[IM_START], ids[IM_END]

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain text: special-token strings in it stay characters."""
        return self._plain.encode(text, add_special_tokens=False).ids

    def encode(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        newline = self.text_ids("\n")
        ids = [self.bos]
        for m in messages:
            ids += [self.im_start, *self.text_ids(f"{m['role']}\n{m['content']}"), self.im_end,
                    *newline]
        if add_generation_prompt:
            ids += [self.im_start, *self.text_ids("assistant\n")]
        return ids
