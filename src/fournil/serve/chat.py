"""`fournil chat`: talk to a model in the terminal, through its chat template.

The whole conversation is the prompt of each reply (oldest turns are dropped when it no
longer fits the context, the system prompt never). Replies stream as they are generated;
Ctrl-C stops a reply, not the session; `/reset` forgets the conversation, `/exit` or Ctrl-D
leaves.

With a passage index (`fournil chat --index DIR`), each message is a question answered as
`fournil ask` answers it, by the same code (`ask`: `fournil.serve.answerer.answer_from_index`)
and printed as it prints it (`fournil.index.answer.render_text`: the answer, then each cited
source with its title, author, date, license and quote), or its refusal. Each question stands
alone, as the synth RAG task the model was tuned on has one question per prompt, and
retrieval has only the question's words to go on. The answer is printed whole, not streamed:
an answer that cites no passage is replaced by the refusal, which is only known at its end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace

from fournil.index.answer import Answer, QuestionError, render_text
from fournil.serve.engine import Sampling, ServedModel

HELP = "/reset forgets the conversation, /exit (or Ctrl-D) leaves, Ctrl-C stops a reply"
ASK_HELP = ("each question is answered from the index on its own, with its sources; "
            "/exit (or Ctrl-D) leaves, Ctrl-C stops an answer")


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


def answer_question(ask: Callable[[str], Answer], question: str,
                    write: Callable[[str], None]) -> Answer | None:
    """`question` answered by `ask` and printed as `fournil ask` prints it; a question that
    cannot be asked (too long) is said so, and Ctrl-C stops the answer, not the session."""
    try:
        result = ask(question)
    except QuestionError as e:
        write(f"(not asked: {e})\n")
        return None
    except KeyboardInterrupt:
        write("\n(stopped)\n")
        return None
    write(f"bot> {render_text(result)}\n")
    return result


def chat_loop(served: ServedModel, sampling: Sampling, system: str | None = None,
              read: Callable[[str], str] = input, write: Callable[[str], None] = _write,
              ask: Callable[[str], Answer] | None = None) -> list[dict]:
    """Runs the conversation until /exit or end of input; returns its messages. With `ask`,
    each message is a question it answers from an index (module docstring), and none is
    kept."""
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    usage = HELP if ask is None else ASK_HELP
    write(f"{served.name} ({served.max_seq_len} tokens of context). {usage}\n")
    while True:
        try:
            line = read("you> ")
        except EOFError:
            write("\n")
            return messages
        except KeyboardInterrupt:
            write(f"\n({usage})\n")
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
            write(f"(unknown command {command}; {usage})\n")
            continue
        if ask is not None:
            answer_question(ask, line, write)
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
