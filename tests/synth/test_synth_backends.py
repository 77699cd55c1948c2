"""The synth generators against a real LLM (SmolLM2-135M-Instruct) behind a real
`fournil serve`, and the same model in-process through transformers and llama.cpp. What
needs a server but not a model that knows anything (retries, 4xx, 429 and Retry-After,
spreading requests over URLs, the cache) runs against tiny random models, on any machine."""

import json
import shutil
import socket

import httpx
import pytest

from fournil.core.validation import RecipeError
from fournil.synth.backends import HFGenerator, OpenAIGenerator, make_generator
from fournil.synth.cache import GenerationCache, cache_key
from fournil.synth.config import GeneratorConfig
from fournil.synth.generator import GenRequest

PARIS = ({"role": "user", "content": "What is the capital of France? Answer in one word."},)
QUESTIONS = ["What is the capital of France?", "What is 2 + 2?", "Name a color.",
             "What is the capital of Italy?", "Say hello.", "Name an animal."]


def _chat(question: str, **sampling) -> GenRequest:
    sampling.setdefault("max_tokens", 12)
    return GenRequest.from_chat([{"role": "user", "content": question}], **sampling)


def _openai(server: str, model: str, **kw) -> OpenAIGenerator:
    kw.setdefault("backoff_s", 0.05)
    return OpenAIGenerator(server, model, **kw)


@pytest.fixture(scope="module")
def model_name(smollm2_dir) -> str:
    return smollm2_dir.name  # what `fournil serve` calls a folder it did not export


TINY = "tiny-fournil"  # what `fournil serve` calls the tiny model's export folder


@pytest.fixture(scope="module")
def tiny_serve(tiny_chat_model_dir, start_fournil_serve):
    """A real `fournil serve` of a tiny random fournil model (2 generations at once)."""
    return start_fournil_serve(tiny_chat_model_dir, "--max-concurrency", "2")


def _dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_greedy_answer_is_paris(smollm2_server, model_name):
    gen = _openai(smollm2_server, model_name)
    [result] = gen.generate([GenRequest.from_chat(PARIS, max_tokens=10, temperature=0)])
    assert result.error is None, result.error
    assert "Paris" in result.text
    assert result.prompt_tokens > 10 and 0 < result.completion_tokens <= 10
    assert gen.id == f"openai:{model_name}@{smollm2_server}"


def test_concurrent_batch_keeps_request_order(tiny_serve):
    before = tiny_serve.requests(200)
    # request i may generate i + 1 tokens (every answer is longer): its token count says
    # whose result it is; the later ones are the shorter, so they finish first
    requests = [_chat(q, temperature=0, max_tokens=5 - i) for i, q in enumerate(QUESTIONS[:4])]
    batch = _openai(tiny_serve.url, TINY, concurrency=3).generate(requests)
    assert tiny_serve.requests(200) - before == 4
    assert all(r.error is None and r.text for r in batch), [r.error for r in batch]
    assert [r.completion_tokens for r in batch] == [5, 4, 3, 2]


def test_cache_answers_a_second_run_without_any_request(tiny_serve, tmp_path):
    config = GeneratorConfig(backend="openai", base_url=[tiny_serve.url], model=TINY,
                             backoff_s=0.05, max_retries=1)
    requests = [_chat(q, temperature=0.7, seed=i, max_tokens=4)
                for i, q in enumerate(QUESTIONS[:3])]
    # a request the server refuses (over the context): its failure must not be cached
    requests.append(_chat("Hi", max_tokens=100_000))
    requests.append(requests[0])  # a repeat in the same batch is generated once
    before = tiny_serve.requests()
    first = make_generator(config, cache_dir=tmp_path).generate(requests)
    assert tiny_serve.requests() - before == 4
    assert [r.text is not None for r in first] == [True, True, True, False, True]
    assert [r.cached for r in first] == [False, False, False, False, True]
    assert first[4].text == first[0].text
    assert len(GenerationCache(tmp_path)) == 3

    # the same model behind an endpoint that does not exist: the cache answers everything
    dead = GeneratorConfig(**{**config.__dict__, "base_url": [_dead_url()]})
    before = tiny_serve.requests()
    second = make_generator(dead, cache_dir=tmp_path).generate(requests)
    assert tiny_serve.requests() == before
    assert [r.cached for r in second] == [True, True, True, False, True]
    assert [r.text for r in second] == [r.text for r in first]
    assert "connection error" in second[3].error


def test_dead_endpoint_gives_errors_after_retries_not_an_exception():
    gen = _openai(_dead_url(), "any", max_retries=2, timeout_s=5)
    results = gen.generate([_chat("a"), _chat("b")])
    assert [r.text for r in results] == [None, None]
    assert all("connection error" in r.error and "after 3 tries" in r.error for r in results)


def test_a_4xx_is_not_retried_and_names_the_status(tiny_serve):
    before = tiny_serve.requests(404)
    [result] = _openai(tiny_serve.url, "no-such-model", max_retries=3).generate([_chat("Hi")])
    assert result.text is None
    assert result.error.startswith("http 404") and "no-such-model" in result.error
    assert tiny_serve.requests(404) - before == 1


@pytest.fixture(scope="module")
def busy_server(tiny_chat_model_dir):
    """A second server, in this process (the same app as `fournil serve`), of the same tiny
    model, that takes one request at a time and queues none: beyond, a 429 with Retry-After.
    Yields (url, limiter counters)."""
    pytest.importorskip("uvicorn")
    from fournil.serve.engine import load_served
    from fournil.serve.server import create_app, running_server

    app = create_app(load_served(tiny_chat_model_dir), max_concurrency=1, max_queue=0)
    with running_server(app) as url:
        yield url, app.state.generations.limiter


@pytest.fixture(scope="module")
def other_model_dir(tiny_tokenizer_dir, tmp_path_factory):
    """A tiny random Llama with a chat template of its own: a model that is not fournil's,
    which `fournil serve` runs through transformers."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("other") / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=0, eos_token_id=0, pad_token_id=0)).save_pretrained(folder)
    shutil.copyfile(tiny_tokenizer_dir / "tokenizer.json", folder / "tokenizer.json")
    config = json.loads((tiny_tokenizer_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + "
                               "'\\n' }}{% endfor %}{% if add_generation_prompt %}"
                               "{{ 'assistant: ' }}{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_an_hf_model_serves_raw_completions_too(other_model_dir):
    pytest.importorskip("uvicorn")
    from fournil.serve.engine import load_served
    from fournil.serve.server import create_app, running_server

    served = load_served(other_model_dir)
    assert type(served).__name__ == "HFServedModel"
    with running_server(create_app(served)) as url:
        response = httpx.post(f"{url}/completions", json={
            "model": "tiny-llama", "prompt": "Il était une fois", "max_tokens": 3,
            "temperature": 0}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["completion_tokens"] == 3 and body["choices"][0]["text"]


def test_429_is_retried_after_retry_after(busy_server):
    url, limiter = busy_server
    rejected = limiter.rejected
    # long enough (~0.2 s each on one thread) that three sent at once meet on the one slot
    requests = [_chat(q, temperature=0, max_tokens=64) for q in QUESTIONS[:3]]
    results = _openai(url, TINY, concurrency=3, max_retries=8).generate(requests)
    assert all(r.error is None for r in results), [r.error for r in results]
    assert [r.completion_tokens for r in results] == [64] * 3
    assert limiter.rejected > rejected  # three at once on a one-slot server


def test_requests_are_spread_over_the_base_urls(tiny_serve, busy_server):
    url, limiter = busy_server
    limiter.peak_active = 0
    before = tiny_serve.requests(200)
    gen = _openai([tiny_serve.url, url], TINY, concurrency=2, max_retries=4)
    results = gen.generate([_chat(q, max_tokens=2) for q in QUESTIONS[:4]])
    assert all(r.error is None for r in results), [r.error for r in results]
    assert tiny_serve.requests(200) > before and limiter.peak_active == 1


def test_hf_backend_gives_the_servers_greedy_text(smollm2_dir, smollm2_server, model_name):
    requests = [GenRequest.from_chat(PARIS, max_tokens=10, temperature=0),
                _chat("Name an animal.", temperature=0, max_tokens=6)]
    hf = HFGenerator(smollm2_dir)
    assert hf.id == f"hf:{model_name}"
    local = hf.generate(requests)
    served = _openai(smollm2_server, model_name).generate(requests)
    assert [r.text for r in local] == [r.text for r in served]
    assert "Paris" in local[0].text
    # sampling is seeded per request: the same seed, the same text
    sampled = [_chat("Tell me a word.", temperature=1.0, seed=s, max_tokens=5) for s in (1, 1)]
    a, b = hf.generate(sampled)
    assert a.text == b.text


def test_llama_cpp_backend_answers_from_the_gguf(llama_cpp, smollm2_gguf_path):
    gen = make_generator(GeneratorConfig(backend="llama_cpp", model=str(smollm2_gguf_path)))
    assert gen.id == f"llama_cpp:{smollm2_gguf_path.name}"
    [result] = gen.generate([GenRequest.from_chat(PARIS, max_tokens=10, temperature=0)])
    assert result.error is None and "Paris" in result.text


# --- without a model -------------------------------------------------------------------------

def test_fournil_models_get_fournils_engine_others_transformers(tiny_tokenizer_dir,
                                                               tiny_chat_model_dir,
                                                               other_model_dir, tmp_path):
    from fournil.model.hf import is_fournil_model
    assert is_fournil_model(tiny_tokenizer_dir)  # our ChatML template
    assert is_fournil_model(tiny_chat_model_dir)
    assert not is_fournil_model(other_model_dir)
    assert not is_fournil_model(other_model_dir / "model.safetensors")
    # a Llama with our tokenizer and its ChatML template is still not a shape ours runs
    llama = tmp_path / "llama-with-our-tokenizer"
    llama.mkdir()
    shutil.copyfile(other_model_dir / "config.json", llama / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_tokenizer_dir / name, llama / name)
    assert not is_fournil_model(llama)


def test_serve_verb_names_a_missing_model(tmp_path, capsys):
    from fournil.cli import main
    with pytest.raises(SystemExit) as exit:
        main(["serve", "--model", str(tmp_path / "nope.gguf")])
    assert exit.value.code == 2
    assert "nope.gguf: no such model folder or .gguf file" in capsys.readouterr().err


def test_cache_key_ignores_the_url_but_not_the_model_or_sampling():
    r = _chat("Hi")
    key = cache_key("openai:m@http://a:1/v1", r)
    assert key == cache_key("openai:m@http://b:2/v1,http://c:3/v1", r)
    assert key != cache_key("openai:other@http://a:1/v1", r)
    assert key != cache_key("openai:m@http://a:1/v1", _chat("Hi", seed=1))
    assert key != cache_key("openai:m@http://a:1/v1", _chat("Hi", stop=("\n",)))


def test_config_errors_name_the_key():
    with pytest.raises(RecipeError, match=r"synth.generator.backend: unknown backend 'vllm'"):
        make_generator(GeneratorConfig(backend="vllm"))
    with pytest.raises(RecipeError, match=r"synth.generator.base_url: the openai backend"):
        make_generator(GeneratorConfig(backend="openai", model="m"))
    with pytest.raises(RecipeError, match=r"base_url\[0\]: must start with http"):
        make_generator(GeneratorConfig(backend="openai", model="m", base_url=["localhost:8000"]))
    with pytest.raises(RecipeError, match=r"synth.generator.model: the llama_cpp backend loads"):
        make_generator(GeneratorConfig(backend="llama_cpp", model="model.bin"))


def test_programmatic_generator_refuses_to_generate():
    gen = make_generator(GeneratorConfig())
    assert gen.id == "programmatic"
    with pytest.raises(RuntimeError, match="backend is \"programmatic\""):
        gen.generate([_chat("Hi")])
