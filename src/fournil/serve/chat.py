"""`fournil chat`: talk to a model in the terminal, through its chat template.

The whole conversation is the prompt of each reply (oldest turns are dropped when it no
longer fits the context, the system prompt never). Replies stream as they are generated;
Ctrl-C stops a reply, not the session; `/reset` forgets the conversation, `/exit` or Ctrl-D
leaves.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace

from fournil.serve.engine import Sampling, ServedModel

HELP = "/reset forgets the conversation, /exit (or Ctrl-D) leaves, Ctrl-C stops a reply"


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def fit_history(served: ServedModel, messages: list[dict], max_tokens: int
                ) -> tuple[list[int], list[dict], int]:
    """The prompt ids of the longest recent part of `messages` that leaves room for a reply
    (the system prompt and the last message always stay), the messages kept, and the reply's
    token budget (`max_tokens`, or less when the last message alone nearly fills the
    context). Raises ValueError when the system prompt and last message leave no room."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    for start in range(len(turns)):
        kept = system + turns[start:]
        ids = served.encode_chat(kept)
        if len(ids) + max_tokens <= served.max_seq_len:
            return ids, kept, max_tokens
    room = served.max_seq_len - len(ids)
    if room < 1:
        raise ValueError(f"the message is {len(ids)} tokens with the system prompt and the "
                         f"template; the context is {served.max_seq_len}")
    return ids, kept, room


def chat_loop(served: ServedModel, sampling: Sampling, system: str | None = None,
              read: Callable[[str], str] = input, write: Callable[[str], None] = _write
              ) -> list[dict]:
    """Runs the conversation until /exit or end of input; returns its messages."""
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    write(f"{served.name} ({served.max_seq_len} tokens of context). {HELP}\n")
    while True:
        try:
            line = read("you> ")
        except EOFError:
            write("\n")
            return messages
        except KeyboardInterrupt:
            write(f"\n({HELP})\n")
            continue
        command = line.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return messages
        if command == "/reset":
            messages = list(start)
            write("(conversation forgotten)\n")
            continue
        if command.startswith("/"):
            write(f"(unknown command {command}; {HELP})\n")
            continue
        messages.append({"role": "user", "content": line})
        try:
            prompt_ids, kept, budget = fit_history(served, messages, sampling.max_tokens)
        except ValueError as e:
            messages.pop()
            write(f"(too long: {e})\n")
            continue
        if len(kept) < len(messages):
            write(f"(the {len(messages) - len(kept)} oldest messages no longer fit the "
                  "context and are left out)\n")
        completion = served.complete(prompt_ids, replace(sampling, max_tokens=budget))
        reply: list[str] = []
        write("bot> ")
        try:
            for piece in completion:
                reply.append(piece)
                write(piece)
        except KeyboardInterrupt:
            write(" [stopped]")
        write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})
