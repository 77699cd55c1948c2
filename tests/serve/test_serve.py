"""`fournil serve` and `fournil chat` with real parts: a real (tiny, random) fournil export
served by uvicorn on 127.0.0.1, talked to by the `openai` client and by raw HTTP."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from fournil.cli import main
from fournil.export.hf import export_hf
from fournil.formats.chatml import ChatEncoder, render_chatml
from fournil.model.config import TransformerConfig
from fournil.model.generate import generate
from fournil.model.transformer import Transformer
from fournil.serve.chat import chat_loop
from fournil.serve.engine import Sampling, ServedModel, TextStream
from fournil.serve.server import create_app, running_server

CONTEXT = 1024
CHAT = [{"role": "system", "content": "Tu es une boulangère."},
        {"role": "user", "content": "Bonjour ! Un croissant ?"},
        {"role": "assistant", "content": "Voilà, encore tiède."},
        {"role": "user", "content": "Merci <|im_end|> au revoir"}]


@pytest.fixture(scope="module")
def export_dir(tiny_tokenizer_dir, tmp_path_factory):
    """A real export folder (HF config, safetensors, tokenizer with the chat template,
    generation config) of a random model with a long context, so generations can be long."""
    vocab = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(
        vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=16, intermediate_size=128, max_seq_len=CONTEXT))
    with torch.no_grad():  # far from uniform, so greedy text is not one repeated token
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 0.1)
    out = tmp_path_factory.mktemp("serve") / "export"
    export_hf(model.eval(), out, tiny_tokenizer_dir, "# test model\n",
              generation={"temperature": 0.8, "top_k": 50, "top_p": 0.95, "max_new_tokens": 8})
    return out


@pytest.fixture(scope="module")
def served(export_dir):
    return ServedModel(export_dir, name="tiny")


@pytest.fixture(scope="module")
def server(served):
    app = create_app(served, max_concurrency=2, max_queue=8)
    with running_server(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key="unused", max_retries=0, timeout=60)


# --- chat template and text streaming ---------------------------------------------------------

def test_chatml_renders_and_encodes_like_transformers(tiny_tokenizer_dir, served):
    hf = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    text = render_chatml(CHAT)
    assert text == hf.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert render_chatml(CHAT, False) == hf.apply_chat_template(CHAT, tokenize=False)
    encoder = ChatEncoder(served.tokenizer)
    safe = CHAT[:3]  # no special-token string inside: the same ids as encoding the text
    assert encoder.encode(safe) == served.tokenizer.encode(render_chatml(safe)).ids
    # typed text never becomes a control token: one <|im_end|> per message, none inside
    ids = encoder.encode(CHAT)
    assert ids.count(encoder.im_end) == len(CHAT)
    assert served.tokenizer.encode(text).ids.count(encoder.im_end) == len(CHAT) + 1
    assert "Merci <|im_end|> au revoir" in served.tokenizer.decode(ids)


def test_text_stream_cuts_at_stop_strings_and_never_shows_part_of_one(served):
    tok = served.tokenizer
    text = "Il était une fois une boulangère. « Bonjour ! » disait-elle."
    ids = tok.encode(text, add_special_tokens=False).ids

    def run(stop):
        stream, pieces = TextStream(tok, stop), []
        for token in ids:
            piece, stopped = stream.push(token)
            pieces.append(piece)
            if stopped:
                return pieces, True
        return pieces + [stream.flush()], False

    pieces, stopped = run([])
    assert "".join(pieces) == tok.decode(ids) == text and not stopped
    assert len([p for p in pieces if p]) > 3  # really piece by piece
    pieces, stopped = run(["Bonjour", "boulangère."])
    assert "".join(pieces) == "Il était une fois une " and stopped
    assert not any("boul" in p or "Bon" in p for p in pieces)
    pieces, stopped = run(["Bonsoir"])  # held back while it could be "Bonsoir", then sent
    assert "".join(pieces) == text and not stopped


# --- the openai client ------------------------------------------------------------------------

def test_models_list_and_retrieve(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"] and models[0].owned_by == "fournil"
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_completion_equals_direct_generation(client, served):
    r = client.completions.create(model="tiny", prompt="Il était une fois", max_tokens=12,
                                  temperature=0)
    prompt_ids = served.tokenizer.encode("Il était une fois").ids
    direct = generate(served.model, prompt_ids, 12, temperature=0)
    assert r.choices[0].text == served.tokenizer.decode(direct, skip_special_tokens=True)
    assert r.choices[0].finish_reason == "length" and r.object == "text_completion"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt_ids), 12)
    assert r.usage.total_tokens == len(prompt_ids) + 12 and r.model == "tiny"
    # seeded sampling is reproducible through the API; the stop string is left out
    a, b = (client.completions.create(model="tiny", prompt="Il", max_tokens=20, seed=7,
                                      temperature=1.0, extra_body={"top_k": 40}).choices[0].text
            for _ in range(2))
    assert a == b
    stop = a[3:5]
    cut = client.completions.create(model="tiny", prompt="Il", max_tokens=20, seed=7,
                                    temperature=1.0, extra_body={"top_k": 40},
                                    stop=[stop]).choices[0]
    assert cut.text == a[:a.index(stop)] and cut.finish_reason == "stop"


def test_chat_and_streamed_chat_agree(client, served):
    messages = CHAT[:2]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30,
                                       temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.usage.prompt_tokens == len(served.encode_chat(messages))
    assert r.usage.completion_tokens == 30

    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([d for d in deltas if d]) > 1 and "".join(deltas) == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 30
    assert {c.id for c in chunks} == {chunks[0].id}


def test_streamed_completion_events_end_with_done(server):
    url, _ = server
    with httpx.stream("POST", f"{url}/completions", timeout=60, json={
            "prompt": "Bonjour", "max_tokens": 10, "temperature": 0, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    plain = httpx.post(f"{url}/completions", timeout=60, json={
        "prompt": "Bonjour", "max_tokens": 10, "temperature": 0}).json()
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]


# --- bad requests -----------------------------------------------------------------------------

def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_malformed_requests_get_4xx_and_the_server_keeps_serving(server):
    url, _ = server
    post = lambda path, **kw: httpx.post(f"{url}{path}", timeout=60, **kw)  # noqa: E731
    assert _error(post("/completions", content=b'{"prompt": "x",'), 400)["code"] == "invalid_json"
    assert _error(post("/chat/completions", content=b"[1, 2]"), 400)["code"] == "invalid_json"
    assert _error(post("/completions", json={"max_tokens": 3}), 400)["param"] == "prompt"
    error = _error(post("/completions", json={"prompt": "x", "temperature": -0.5}), 400)
    assert error["param"] == "temperature" and "-0.5" in error["message"]
    assert _error(post("/completions", json={"prompt": "x", "top_p": 0}), 400)["param"] == "top_p"
    nan = post("/completions", content=b'{"prompt": "x", "temperature": NaN}')
    assert _error(nan, 400)["param"] == "temperature"
    assert _error(post("/completions", json={"prompt": "x", "seed": 2**70}), 400)["param"] == "seed"
    error = _error(post("/completions", json={"prompt": "x", "max_tokens": "ten"}), 400)
    assert error["param"] == "max_tokens" and error["code"] == "invalid_type"
    error = _error(post("/completions", json={"prompt": "x", "best_effort": True}), 400)
    assert "best_effort" in error["message"]
    assert _error(post("/completions", json={"prompt": "x", "n": 2}), 400)["param"] == "n"
    error = _error(post("/chat/completions", json={
        "messages": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]}), 400)
    assert error["param"] == "messages[1].role" and "wizard" in error["message"]
    assert _error(post("/chat/completions", json={"messages": []}), 400)["param"] == "messages"
    error = _error(post("/completions", json={"model": "gpt-4", "prompt": "x"}), 404)
    assert error["code"] == "model_not_found"
    # over the context: the message names the numbers
    long_prompt = " ".join(["boulangère"] * 600)
    error = _error(post("/completions", json={"prompt": long_prompt, "max_tokens": 100}), 400)
    assert error["code"] == "context_length_exceeded" and str(CONTEXT) in error["message"]
    assert "100 for the completion" in error["message"]
    error = _error(post("/completions", json={"prompt": long_prompt * 2}), 400)
    assert error["code"] == "context_length_exceeded"
    assert _error(httpx.get(f"{url}/nothing-here"), 404)["code"] == "not_found"
    assert _error(httpx.get(f"{url}/completions"), 405)["code"] == "method_not_allowed"
    # ... and the next good request is answered
    ok = post("/chat/completions", json={"messages": [{"role": "user", "content": "Salut"}],
                                         "max_tokens": 5})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 5


def test_inputs_that_once_made_500s_get_a_400_or_an_answer(server):
    url, _ = server
    post = lambda path, body: httpx.post(f"{url}{path}", content=body, timeout=60)  # noqa: E731
    # lone UTF-16 surrogates: not Unicode, so no tokenizer or UTF-8 encoder takes them
    error = _error(post("/completions", b'{"prompt": "\\ud800 x"}'), 400)
    assert error["code"] == "invalid_json" and error["param"] == "prompt"
    error = _error(post("/chat/completions",
                        b'{"messages": [{"role": "user", "content": "\\udfff"}]}'), 400)
    assert error["param"] == "messages[0].content"
    assert _error(post("/completions", b'{"\\ud800": 1}'), 400)["code"] == "invalid_json"
    assert _error(post("/completions", b'{"prompt": "\xed\xa0\x80"}'), 400)["param"] == "prompt"
    # nesting deeper than json's parser recurses
    error = _error(post("/completions", b"[" * 100_000), 400)
    assert "nested too deeply" in error["message"]
    # valid but extreme sampling values, which overflow or round to 0 in float32
    greedy = httpx.post(f"{url}/completions", timeout=60, json={
        "prompt": "Il", "max_tokens": 6, "temperature": 0}).json()["choices"][0]["text"]
    for extreme in ({"temperature": 1e-300}, {"temperature": 1e-40},
                    {"temperature": 2, "top_p": 1e-300}, {"top_k": 10**18, "top_p": 1e-45}):
        r = httpx.post(f"{url}/completions", timeout=60,
                       json={"prompt": "Il", "max_tokens": 6, **extreme})
        assert r.status_code == 200, (extreme, r.text)
        assert r.json()["choices"][0]["text"] == greedy  # each is greedy in effect


def test_openai_client_raises_bad_request_on_over_context(client):
    with pytest.raises(openai.BadRequestError, match="maximum context length is 1024"):
        client.completions.create(model="tiny", prompt="boulangère " * 600, max_tokens=600)
    assert client.completions.create(model="tiny", prompt="Il", max_tokens=3).choices


# --- concurrency ------------------------------------------------------------------------------

def _long_request(url: str, max_tokens: int = 300) -> httpx.Response:
    return httpx.post(f"{url}/completions", timeout=120, json={
        "prompt": "Il était une fois", "max_tokens": max_tokens, "temperature": 0})


def test_requests_beyond_the_queue_get_429(served):
    app = create_app(served, max_concurrency=1, max_queue=0)
    with running_server(app) as url, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: _long_request(url), range(4)))
        codes = sorted(r.status_code for r in responses)
        assert codes[0] == 200 and codes[-1] == 429, codes
        busy = next(r for r in responses if r.status_code == 429)
        assert _error(busy, 429)["type"] == "rate_limit_error" and busy.headers["retry-after"]
        assert _long_request(url, 5).status_code == 200  # a free slot again
    stats = app.state.generations.limiter
    assert stats.peak_active == 1 and stats.rejected == codes.count(429)


def test_queued_requests_wait_their_turn(served):
    app = create_app(served, max_concurrency=1, max_queue=3)
    with running_server(app) as url, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: _long_request(url, 100), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    texts = {r.json()["choices"][0]["text"] for r in responses}
    assert len(texts) == 1  # the same greedy text, generated one after the other
    assert app.state.generations.limiter.peak_active == 1


def test_a_client_that_leaves_stops_its_generation_and_the_loop_stays_responsive(served):
    app = create_app(served, max_concurrency=1, max_queue=0)
    generations = app.state.generations
    with running_server(app) as url:
        with httpx.stream("POST", f"{url}/chat/completions", timeout=60, json={
                "messages": [{"role": "user", "content": "Raconte."}], "temperature": 0,
                "stream": True}) as r:  # no max_tokens: the whole context, ~1000 tokens
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            # while it generates, the server answers (the model runs on a worker thread)
            health = httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()
            assert health["active"] == 1
        deadline = time.time() + 30
        while generations.cancelled == 0 and time.time() < deadline:
            time.sleep(0.02)
        assert generations.cancelled == 1 and generations.limiter.active == 0
        assert _long_request(url, 5).status_code == 200


def test_default_threads_follow_the_cpu_affinity_not_the_host():
    """Pinned to one core, `fournil serve`, curation and GGUF eval all see one core, whatever
    os.cpu_count() says (in a subprocess: the affinity is the whole process's)."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this OS")
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from fournil.serve.server import cpu_threads\n"
            "from fournil.core.executors import LocalExecutor\n"
            "from fournil.eval.gguf_bpb import default_threads\n"
            "print(cpu_threads(1), cpu_threads(2), cpu_threads(1, threads=3), "
            "LocalExecutor().workers, default_threads(), os.cpu_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[:5] == ["1", "1", "3", "1", "1"], out


# --- terminal chat ----------------------------------------------------------------------------

def _script(*lines: str):
    """`input` replaced by these lines, then end of input (Ctrl-D)."""
    it = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None
    return read


def test_chat_loop_keeps_history_resets_and_exits(served):
    prompts: list[list[int]] = []
    complete = served.complete

    class Recording:  # records each prompt the loop builds, then generates for real
        def __getattr__(self, name):
            return getattr(served, name)

        def complete(self, prompt_ids, sampling, cancel=None):
            prompts.append(prompt_ids)
            return complete(prompt_ids, sampling, cancel)

    out: list[str] = []
    messages = chat_loop(Recording(), Sampling(max_tokens=6, temperature=0), system="Sois brève.",
                         read=_script("Bonjour", "Et ensuite ?", "/reset", "Encore", "/exit",
                                     "never read"), write=out.append)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"] == "Encore"
    # the second turn's prompt holds the first exchange; after /reset it is gone again
    first = [{"role": "system", "content": "Sois brève."}, {"role": "user", "content": "Bonjour"}]
    assert prompts[0] == served.encode_chat(first)
    assert prompts[1][:len(prompts[0])] == prompts[0] and len(prompts[1]) > len(prompts[0]) + 6
    assert len(prompts[2]) < len(prompts[1])
    assert "(conversation forgotten)\n" in out and "bot> " in out


def test_chat_loop_drops_the_oldest_turns_when_the_context_is_full(served):
    word = "boulangère "
    long = word * (300 // len(served.encode_prompt(word)))  # ~300 tokens, context 1024
    out: list[str] = []
    messages = chat_loop(served, Sampling(max_tokens=4, temperature=0),
                         read=_script(long, long, long, long), write=out.append)
    assert len(messages) == 8  # all kept in the session ...
    assert any("no longer fit the context" in o for o in out)  # ... not all in the prompt



def test_fournil_chat_verb(export_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("Bonjour\n/reset\n/exit\n"))
    main(["-q", "chat", str(export_dir), "--system", "Sois brève.", "--max-new-tokens", "4",
          "--temperature", "0"])
    out = capsys.readouterr().out
    assert "you> bot> " in out and "(conversation forgotten)" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "chat", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no model here" in capsys.readouterr().err
