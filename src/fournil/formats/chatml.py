"""Chats as the model sees them: ChatML, its control tokens and the Jinja template fournil's
tokenizer ships (`tokenizer_config.json`'s `chat_template`, see `fournil.tokenizer.train`).

`render_chatml` is that Jinja template written as a function (the tests check it renders
what `transformers`' `apply_chat_template` does), so serving needs no template engine.
`encode_chat` tokenizes a chat so that text inside a message can never become a control
token: a user who types `<|im_end|>` gets those characters, not the end of their turn.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        self.pad_id = self.bos  # what pads packed rows (masked out of every loss)

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

    def encode_with_mask(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        """(ids, mask): the chat's token ids and 1 on the tokens the model learns to produce
        (the assistant's content and its `<|im_end|>`), 0 elsewhere. `ids[:k]` for an
        assistant turn starting at k equals `encode(messages before it)`."""
        text = self.text_ids  # special-token strings in the text stay plain text
        newline = text("\n")
        ids, mask = [self.bos], [0]
        for m in messages:
            if m["role"] == "assistant":
                head = [self.im_start, *text("assistant\n")]
                body = [*text(m["content"]), self.im_end]
                ids += head + body + newline
                mask += [0] * len(head) + [1] * len(body) + [0] * len(newline)
            else:
                turn = [self.im_start, *text(f"{m['role']}\n{m['content']}"), self.im_end,
                        *newline]
                ids += turn
                mask += [0] * len(turn)
        return ids, mask
