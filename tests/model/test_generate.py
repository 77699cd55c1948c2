import shutil

import pytest
import torch
from tokenizers import Tokenizer

from fournil.export.hf import export_hf
from fournil.model.config import TransformerConfig
from fournil.model.generate import generate, generate_text, iter_tokens, load_for_generation
from fournil.model.transformer import Transformer

PROMPT = [0, 17, 42, 99, 250, 7]


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
                            num_kv_heads=2, head_dim=16, intermediate_size=128, max_seq_len=64)
    model = Transformer(cfg)
    with torch.no_grad():  # larger than the init, so the distribution is far from uniform
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 0.1)
    return model.eval()


def greedy_without_cache(model: Transformer, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_greedy_with_cache_equals_recomputing(model):
    assert generate(model, PROMPT, 24, temperature=0) == greedy_without_cache(model, PROMPT, 24)


def test_sampling_is_seeded(model):
    a = generate(model, PROMPT, 32, temperature=1.0, seed=123)
    assert len(a) == 32
    assert generate(model, PROMPT, 32, temperature=1.0, seed=123) == a
    assert generate(model, PROMPT, 32, temperature=1.0, seed=124) != a


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    greedy = generate(model, PROMPT, 16, temperature=0)
    assert generate(model, PROMPT, 16, temperature=1.0, top_k=1, seed=5) == greedy
    assert generate(model, PROMPT, 16, temperature=1.0, top_p=1e-6, seed=5) == greedy
    # extremes that overflow or round to 0 in float32 are still greedy, not NaN
    assert generate(model, PROMPT, 16, temperature=1.0, top_p=1e-300, seed=5) == greedy
    assert generate(model, PROMPT, 16, temperature=1e-300, seed=5) == greedy
    # filters that keep several tokens still sample (and still run)
    assert len(generate(model, PROMPT, 16, temperature=1.0, top_k=50, top_p=0.9, seed=5)) == 16


def test_stop_id_ends_generation_and_is_returned(model):
    greedy = generate(model, PROMPT, 16, temperature=0)
    stop = greedy[5]
    out = generate(model, PROMPT, 16, temperature=0, stop_ids=[stop])
    assert out == greedy[: greedy.index(stop) + 1]


def test_streaming_yields_the_same_tokens_without_leaking_inference_mode(model):
    stream = iter_tokens(model, PROMPT, 8, temperature=0)
    first = next(stream)
    assert not torch.is_inference_mode_enabled()
    assert [first, *stream] == generate(model, PROMPT, 8, temperature=0)


def test_context_limit(model):
    with pytest.raises(ValueError, match="max_seq_len=64"):
        generate(model, list(range(65)), 4)
    with pytest.raises(ValueError, match="empty prompt"):
        generate(model, [], 4)
    # 60 prompt tokens leave room to feed 4 more: 5 new tokens, the last one never fed back
    prompt = list(range(60))
    out = generate(model, prompt, 20, temperature=0)
    assert out == greedy_without_cache(model, prompt, 5)


def test_generate_text_from_export_and_checkpoint(model, tiny_tokenizer_dir, tmp_path):
    export_hf(model, tmp_path / "export", tiny_tokenizer_dir, "")
    model.save(tmp_path / "ckpt")
    shutil.copyfile(tiny_tokenizer_dir / "tokenizer.json", tmp_path / "ckpt" / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    prompt_ids = tokenizer.encode("Il était une fois").ids
    assert prompt_ids[0] == 0 and prompt_ids.count(0) == 1  # BOS once, from the post-processor
    new = generate(model, prompt_ids, 12, temperature=0, stop_ids=[0, 2])
    expected = tokenizer.decode(new, skip_special_tokens=True)
    for folder in ("export", "ckpt"):
        loaded, tok = load_for_generation(tmp_path / folder)
        assert generate_text(loaded, tok, "Il était une fois", max_new_tokens=12,
                             temperature=0) == expected
