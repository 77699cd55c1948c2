"""`fournil serve --index`: chat completions answered from a real passage index (the curated
Wikipedia sample) by a real random model over real HTTP, quotes constrained to be verbatim
(or not, when the request says so), the sources and the quotes' offsets in the `fournil`
field, streaming, the refusal, `/v1/ask`, and the clear errors for bad input."""

from __future__ import annotations

import json

import httpx
import pytest

from fournil.cli import main
from fournil.formats.citations import check_citations, is_verbatim, render_sources
from fournil.formats.prompts import rag_messages
from fournil.formats.quote_constraint import CLOSE_MARGIN
from fournil.index.answer import REFUSALS
from fournil.index.store import open_index
from fournil.serve.engine import ServedModel
from fournil.serve.rag import ServedIndex
from fournil.serve.server import create_app, running_server

QUESTION = "Dans quelle famille d'araignées se trouve le genre Deinopis ?"
NOTHING_INDEXED = "Quelle est la recette de la pâte à crêpes ?"
PREFIX = '<ref name="'  # every answer opens a quote: the random model then cites


@pytest.fixture(scope="module")
def served(tiny_rag_model_dir):
    return ServedModel(tiny_rag_model_dir)


@pytest.fixture(scope="module")
def documents(wiki_index_dir) -> dict[str, str]:
    """Each indexed document's text, rebuilt from its passages (contiguous pieces of it), to
    check the offsets of quotes against."""
    texts: dict[str, str] = {}
    for p in sorted(open_index(wiki_index_dir).passages, key=lambda p: (p.doc_id, p.start)):
        text = texts.get(p.doc_id, "")
        texts[p.doc_id] = text + " " * (p.start - len(text)) + p.text
    return texts


@pytest.fixture(scope="module")
def urls(served, wiki_index_dir):
    """Base URLs of three servers of the same model: with the index, with the index and the
    answer prefix, and without an index but with the prefix."""
    index = ServedIndex(wiki_index_dir)
    apps = {"index": create_app(served, index=index),
            "prefix": create_app(served, index=index, answer_prefix=PREFIX),
            "bare": create_app(served, answer_prefix=PREFIX)}
    with running_server(apps["index"]) as a, running_server(apps["prefix"]) as b, \
            running_server(apps["bare"]) as c:
        yield {"index": a, "prefix": b, "bare": c}


def chat(url: str, content: str, **fields) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 40, **fields}
    return httpx.post(f"{url}/chat/completions", json=body, timeout=120)


def stream(url: str, content: str, **fields) -> list[dict]:
    """The chunks of a streamed chat completion, checked to end with [DONE]."""
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 40,
            "stream": True, **fields}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def check_offsets(citation: dict, documents: dict[str, str]) -> None:
    """A verbatim citation's start/end point at its quote in its document."""
    span = documents[citation["id"]][citation["start"]:citation["end"]]
    assert is_verbatim(citation["quote"], span) and is_verbatim(span, citation["quote"])


def test_the_prompt_holds_the_question_and_its_passages(urls, served):
    r = chat(urls["index"], QUESTION, seed=1)
    assert r.status_code == 200, r.text
    extra = r.json()["fournil"]
    sources = extra["sources"]
    assert [s["ref"] for s in sources] == ["1", "2", "3"] and extra["relevance"] >= 0.4
    assert sources[0]["title"] == "Deinopis" and "Deinopidae" in sources[0]["text"]
    assert {s["license"] for s in sources} == {"CC-BY-SA-4.0"}
    assert set(sources[0]) == {"ref", "passage", "id", "title", "author", "date", "source",
                               "license", "url", "start", "end", "text", "score"}
    assert sources[0]["passage"].startswith(sources[0]["id"] + "#")
    # the model read exactly the synth RAG task's prompt over these passages
    prompt = served.encode_chat(rag_messages(QUESTION, [(s["ref"], s["text"]) for s in sources]))
    assert r.json()["usage"]["prompt_tokens"] == len(prompt)
    assert extra["verbatim_quotes"] is True


def test_constrained_quotes_are_verbatim_with_their_offsets(urls, documents):
    opened = verbatim = 0
    for seed in range(6):
        r = chat(urls["prefix"], QUESTION, seed=seed, temperature=1.0)
        assert r.status_code == 200, r.text
        answer, extra = r.json()["choices"][0]["message"]["content"], r.json()["fournil"]
        assert answer.startswith(PREFIX)
        sources = {s["ref"]: s["text"] for s in extra["sources"]}
        check = check_citations(answer, sources)
        opened, verbatim = opened + answer.count(PREFIX), verbatim + check.verbatim
        assert len(extra["citations"]) == check.quotes and extra["refused"] is False
        for c in extra["citations"]:
            assert c["verbatim"] and c["license"] == "CC-BY-SA-4.0" and c["title"]
            check_offsets(c, documents)
    assert opened == verbatim >= 6


def test_unconstrained_quotes_are_whatever_the_model_writes(urls):
    opened = verbatim = 0
    for seed in range(6):
        r = chat(urls["prefix"], QUESTION, seed=seed, temperature=1.0, verbatim_quotes=False)
        answer, extra = r.json()["choices"][0]["message"]["content"], r.json()["fournil"]
        assert extra["verbatim_quotes"] is False
        check = check_citations(answer, {s["ref"]: s["text"] for s in extra["sources"]})
        opened, verbatim = opened + answer.count(PREFIX), verbatim + check.verbatim
    assert opened >= 6 and verbatim < opened  # random bytes: the constraint made the quotes


def test_streaming_carries_the_sources_first_and_the_citations_last(urls):
    chunks = stream(urls["prefix"], QUESTION, seed=3)
    whole = chat(urls["prefix"], QUESTION, seed=3).json()
    first, last = chunks[0], chunks[-1]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["fournil"]["sources"] == whole["fournil"]["sources"]
    assert "citations" not in first["fournil"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"] and text.startswith(PREFIX)
    assert last["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert last["fournil"] == whole["fournil"] and last["fournil"]["citations"]


def test_nothing_relevant_is_a_refusal_without_the_model(urls):
    r = chat(urls["prefix"], NOTHING_INDEXED)
    body = r.json()
    assert body["choices"][0]["message"]["content"] == REFUSALS["nothing_relevant"]
    assert body["usage"]["completion_tokens"] == 0
    assert body["fournil"]["refused"] and body["fournil"]["reason"] == "nothing_relevant"
    chunks = stream(urls["prefix"], NOTHING_INDEXED)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == \
        REFUSALS["nothing_relevant"]
    assert chunks[-1]["fournil"]["refused"] is True


def test_sources_written_by_the_client_are_quoted_verbatim(urls):
    sources = [("1", "Chaque matin, elle pétrissait la pâte et enfournait le pain."),
               ("2", "Les enfants du village venaient acheter des croissants encore tièdes.")]
    [message] = rag_messages("Que faisait-elle ?", sources)
    assert render_sources(sources) in message["content"]
    for seed in range(4):
        r = chat(urls["bare"], message["content"], seed=seed, temperature=1.0)
        answer, extra = r.json()["choices"][0]["message"]["content"], r.json()["fournil"]
        assert extra["sources"] == [{"ref": ref, "text": text} for ref, text in sources]
        [citation, *_] = extra["citations"]
        assert citation["verbatim"] and check_citations(answer, dict(sources)).all_verbatim
        text = dict(sources)[citation["ref"]]
        assert is_verbatim(citation["quote"], text[citation["start"]:citation["end"]])
    plain = chat(urls["bare"], "Bonjour ! Un croissant ?").json()  # no sources: no field
    assert "fournil" not in plain


def test_ask_answers_as_fournil_ask_does(urls, documents):
    r = httpx.post(f"{urls['prefix']}/ask", json={"question": QUESTION, "max_tokens": 40},
                   timeout=120)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert {"answer", "sources", "refused", "reason", "passages", "relevance", "model_answer",
            "constrained"} <= set(reply)
    assert reply["refused"] is False and reply["constrained"] is True
    assert reply["answer"].startswith(PREFIX) and reply["sources"]
    for source in reply["sources"]:
        assert source["verbatim"] and source["license"] == "CC-BY-SA-4.0"
        check_offsets(source, documents)
    # the random model without a prefix cites nothing: the refusal says why
    reply = httpx.post(f"{urls['index']}/ask", json={"question": QUESTION, "max_tokens": 8},
                       timeout=120).json()
    assert reply["refused"] is True and reply["reason"] in ("no_citation",
                                                           "sources_do_not_answer")
    reply = httpx.post(f"{urls['index']}/ask", json={"question": NOTHING_INDEXED},
                       timeout=120).json()
    assert reply["refused"] and reply["reason"] == "nothing_relevant"


@pytest.mark.parametrize("body, status, param", [
    ({"question": ""}, 400, "question"),
    ({"question": "   "}, 400, "question"),
    ({"question": "Deinopis ? " * 10_000}, 400, "question"),  # 110 kB
    ({"question": 3}, 400, "question"),
    ({"question": QUESTION, "max_tokens": 0}, 400, "max_tokens"),
    ({"question": QUESTION, "verbatim_quotes": "yes"}, 400, "verbatim_quotes"),
    ({"question": QUESTION, "k": 3}, 400, "k"),
])
def test_ask_rejects_bad_questions(urls, body, status, param):
    r = httpx.post(f"{urls['index']}/ask", json=body, timeout=60)
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text


def test_chat_errors_name_what_is_wrong(urls):
    r = chat(urls["index"], "")
    assert r.status_code == 400 and "empty question" in r.json()["error"]["message"]
    r = chat(urls["index"], "Deinopis ? " * 10_000)
    assert r.status_code == 400 and "1000" in r.json()["error"]["message"]
    r = httpx.post(f"{urls['index']}/chat/completions", timeout=60, json={"messages": [
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Les"}]})
    assert r.status_code == 400 and "last message" in r.json()["error"]["message"]
    r = chat(urls["index"], QUESTION, verbatim_quotes=1)
    assert r.status_code == 400 and r.json()["error"]["param"] == "verbatim_quotes"
    # the prefix opens a ref: an id, `">` and a forced close must fit in max_tokens
    least = len("1") + len('">') + CLOSE_MARGIN
    r = chat(urls["prefix"], QUESTION, max_tokens=least - 1)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    for seed in range(3):
        r = chat(urls["prefix"], QUESTION, max_tokens=least, seed=seed, temperature=1.0)
        answer = r.json()["choices"][0]["message"]["content"]
        assert r.json()["usage"]["completion_tokens"] == least
        assert r.json()["fournil"]["citations"][0]["verbatim"] and "</ref>" in answer
    r = httpx.post(f"{urls['bare']}/ask", json={"question": QUESTION}, timeout=60)
    assert r.status_code == 404 and r.json()["error"]["code"] == "no_index"


def test_serve_refuses_a_missing_or_damaged_index(tiny_rag_model_dir, wiki_index_dir,
                                                  tmp_path, capsys):
    def serve(index) -> tuple[int, str]:
        """`fournil serve --index`'s exit status and error (before any model is loaded)."""
        with pytest.raises(SystemExit) as stopped:
            main(["serve", "--model", str(tiny_rag_model_dir), "--index", str(index)])
        return stopped.value.code, capsys.readouterr().err

    status, error = serve(tmp_path / "nowhere")
    assert status == 2 and "no passage index here" in error, error
    damaged = tmp_path / "index"
    damaged.mkdir()
    for f in wiki_index_dir.rglob("*"):
        if f.is_file():
            (damaged / f.relative_to(wiki_index_dir)).parent.mkdir(parents=True, exist_ok=True)
            data = f.read_bytes()
            if f.name == "passages.parquet":  # a byte flipped in the middle
                data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + \
                    data[len(data) // 2 + 1:]
            (damaged / f.relative_to(wiki_index_dir)).write_bytes(data)
    status, error = serve(damaged)
    assert status == 2 and "passages.parquet: corrupt" in error, error


def test_smollm2_answers_from_the_index_with_verbatim_quotes(smollm2_dir, wiki_index_dir,
                                                             documents, start_fournil_serve):
    """A real instruct model not tuned on cited answers, served by `fournil serve --index`
    with the answer prefix: greedy, constrained, every quote it writes is verbatim, with its
    offsets."""
    url = start_fournil_serve(smollm2_dir, "--index", str(wiki_index_dir), "--answer-prefix",
                              PREFIX).url
    questions = [QUESTION, "Où est né l'acteur Tom McGowan ?",
                 "Qui a remporté le championnat d'Ouganda de football en 2006 ?"]
    citations = []
    for question in questions:
        r = chat(url, question, temperature=0.0, max_tokens=48)
        assert r.status_code == 200, r.text
        answer, extra = r.json()["choices"][0]["message"]["content"], r.json()["fournil"]
        check = check_citations(answer, {s["ref"]: s["text"] for s in extra["sources"]})
        assert answer.count(PREFIX) == check.quotes == check.verbatim >= 1, answer
        citations += extra["citations"]
    assert len(citations) >= 3
    for c in citations:
        assert c["verbatim"] and c["license"] == "CC-BY-SA-4.0"
        check_offsets(c, documents)
