"""`fournil chat --index`, as a user runs it: questions typed on stdin, each answered from a real
passage index (the curated Wikipedia sample) by a real random model, printed exactly as
`fournil ask` prints the same answer, with each source's title, license and quote, the quote
at its offsets in its document; the refusal, and the errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fournil.cli import main
from fournil.formats.citations import is_verbatim
from fournil.index.answer import REFUSALS
from fournil.index.store import open_index

QUESTION = "Dans quelle famille d'araignées se trouve le genre Deinopis ?"
NOTHING_INDEXED = "Quelle est la recette de la pâte à crêpes ?"
HUGE = "Deinopis ? " * 10_000  # a 110 kB line
# every answer opens a quote: the random model then cites, and the constraint makes the quote
FLAGS = ("--answer-prefix", '<ref name="', "--max-new-tokens", "40")


def fournil(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fournil", "-q", *args], input=stdin,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def documents(wiki_index_dir) -> dict[str, str]:
    """Each indexed document's text, rebuilt from its passages (contiguous pieces of it), to
    check the printed offsets of quotes against."""
    texts: dict[str, str] = {}
    for p in sorted(open_index(wiki_index_dir).passages, key=lambda p: (p.doc_id, p.start)):
        text = texts.get(p.doc_id, "")
        texts[p.doc_id] = text + " " * (p.start - len(text)) + p.text
    return texts


def chat_turns(stdout: str) -> tuple[str, list[str]]:
    """The banner, and what the chat printed after each `you> ` prompt."""
    banner, *turns = stdout.split("you> ")
    return banner, [t.removesuffix("\n") for t in turns]


def check_sources(text: str, documents: dict[str, str]) -> int:
    """The sources printed under an answer: each with its title and license, its quote at
    the printed offsets of its document and cited in the answer as « quote » [ref]."""
    body, sources = text.split("\n\nSources :\n")
    lines = sources.split("\n")
    assert lines and len(lines) % 2 == 0, sources
    for head, quoted in zip(lines[::2], lines[1::2], strict=True):
        ref_title, license = head.split(" · ")  # the sample's articles have no URL
        ref, title = ref_title.split(" ", 1)
        assert title and license == "CC-BY-SA-4.0", head
        quote, where = quoted.removeprefix("    « ").rsplit(" » (", 1)
        doc, span = where.removesuffix(")").split(", caractères ")
        start, end = (int(x) for x in span.split("–"))
        assert is_verbatim(quote, documents[doc][start:end]), (quote, doc, start, end)
        assert f"« {quote} » {ref}" in body
    return len(lines) // 2


def test_chat_answers_from_the_index_as_ask_does(wiki_index_dir, tiny_rag_model_dir,
                                                 documents):
    lines = [QUESTION, "", NOTHING_INDEXED, HUGE, "/exit"]
    done = fournil("chat", str(tiny_rag_model_dir), "--index", str(wiki_index_dir), *FLAGS,
                   stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    banner, turns = chat_turns(done.stdout)
    assert "answered from the index on its own" in banner
    answer, empty, refusal, too_long, leaving = turns
    assert answer.startswith("bot> ") and check_sources(answer[5:], documents) >= 1
    assert empty == "" and leaving == ""  # an empty line asks nothing
    assert refusal == f"bot> {REFUSALS['nothing_relevant']}"
    assert too_long.startswith("(not asked: the question is 109999 characters long, over "
                               "the 1000")
    asked = fournil("ask", "--index", str(wiki_index_dir), "--model", str(tiny_rag_model_dir),
                    *FLAGS, QUESTION)
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout == answer[5:] + "\n"  # the same answer, printed the same way


def test_chat_without_the_constraint_prints_what_ask_prints(wiki_index_dir,
                                                            tiny_rag_model_dir):
    flags = (*FLAGS, "--unconstrained")
    done = fournil("chat", str(tiny_rag_model_dir), "--index", str(wiki_index_dir), *flags,
                   stdin=QUESTION + "\n")
    assert done.returncode == 0, done.stderr
    [answer, _] = chat_turns(done.stdout)[1]
    asked = fournil("ask", "--index", str(wiki_index_dir), "--model", str(tiny_rag_model_dir),
                    *flags, QUESTION)
    assert asked.returncode == 0 and answer == "bot> " + asked.stdout.removesuffix("\n")


@pytest.mark.parametrize("flags, message", [
    (("--temperature", "0.7", "--system", "Sois brève."),
     "--system, --temperature: with --index, answers are fournil ask's"),
    (("--index", "{index}", "-k", "0"), "k must be >= 1, got 0"),
])
def test_chat_flags_that_do_not_go_with_an_index(flags, message, wiki_index_dir,
                                                  tiny_rag_model_dir, capsys):
    flags = [f.format(index=wiki_index_dir) for f in flags]
    if "--index" not in flags:
        flags += ["--index", str(wiki_index_dir)]
    with pytest.raises(SystemExit) as stopped:
        main(["chat", str(tiny_rag_model_dir), *flags])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_chat_without_an_index_refuses_its_flags(tiny_rag_model_dir, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["chat", str(tiny_rag_model_dir), "--answer-prefix", '<ref name="'])
    assert stopped.value.code == 2 and "add --index DIR" in capsys.readouterr().err
