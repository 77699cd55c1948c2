"""GGUF for the families an import brings (Llama, Mistral, Qwen2, Qwen3): the export writes what
llama.cpp's converter would (the `llama` architecture's Q/K permutation, biases, RoPE scaling,
the base's pre-tokenizer and BOS setting), the GGUF reader gives the same model back, and
llama.cpp runs it with fournil's logits and greedy tokens and cuts text like the tokenizer."""

from __future__ import annotations

import json
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from fournil.export.gguf import export_gguf
from fournil.model.config import TransformerConfig
from fournil.model.generate import generate
from fournil.model.gguf import read_gguf
from fournil.model.gguf_tokenizer import PRE_TOKENIZERS, pre_tokenizer_name
from fournil.model.transformer import Transformer

CASES = {
    # SmolLM2's shape: tied, theta 1e5, permuted q/k
    "llama-tied": (LlamaConfig, dict(tie_word_embeddings=True, rope_parameters={
        "rope_type": "default", "rope_theta": 100000.0})),
    # every bias llama.cpp's llama architecture takes, untied, head_dim != hidden / heads
    "llama-bias": (LlamaConfig, dict(tie_word_embeddings=False, attention_bias=True,
                                     mlp_bias=True, head_dim=24)),
    "llama-linear": (LlamaConfig, dict(rope_parameters={"rope_type": "linear",
                                                        "rope_theta": 10000.0, "factor": 4.0})),
    # the name tells llama.cpp's `llama` files of Mistral apart; no window (none in a GGUF)
    "tiny-mistral": (MistralConfig, dict(sliding_window=None)),
    "qwen2-yarn": (Qwen2Config, dict(tie_word_embeddings=True, rope_parameters={
        "rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
        "original_max_position_embeddings": 16})),
    "qwen3-linear": (Qwen3Config, dict(head_dim=16, tie_word_embeddings=False, rope_parameters={
        "rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
}
ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
PROMPT = [0] + torch.randint(3, 320, (15,), generator=torch.Generator().manual_seed(1)).tolist()


@pytest.fixture(scope="module")
def exported(tiny_hf_model, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each case: its folder (transformers'), and its float32 GGUF."""
    out = tmp_path_factory.mktemp("gguf-families")
    made = {}
    for name, (config_class, switches) in CASES.items():
        folder = tiny_hf_model(f"{name}-sharp", config_class, std=0.3, **switches)
        made[name] = folder, export_gguf(folder, out / f"{name}.gguf", "f32", name=name)
    return made


@pytest.mark.parametrize("case", CASES)
def test_the_file_reads_back_as_the_same_model(exported, case):
    folder, path = exported[case]
    model = Transformer.load(folder)
    cfg = model.config
    reader = gguf.GGUFReader(path)
    arch = ARCH[cfg.family]
    field = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer")}
    assert field["general.architecture"] == arch
    assert field[f"{arch}.attention.head_count_kv"] == cfg.num_kv_heads
    if arch == "llama":  # what convert_hf_to_gguf writes for the llama architecture
        assert field["llama.rope.dimension_count"] == cfg.head_dim
        assert field["llama.vocab_size"] == cfg.vocab_size
    assert reader.fields["tokenizer.ggml.pre"].contents() == "smollm"  # fournil's tokenizer
    assert reader.fields["tokenizer.ggml.add_bos_token"].contents() is True
    # float32 in, float32 out: the permutation undone, every tensor exactly back
    back = read_gguf(path)
    assert back.config == cfg
    state = model.state_dict()
    assert set(back.state_dict) | ({"lm_head.weight"} if cfg.tie_embeddings else set()) \
        == set(state)
    for name, tensor in back.state_dict.items():
        assert torch.equal(tensor, state[name]), name
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = "Il était une fois, 12 boulangères  et 3 fours.<|im_end|>"
    assert back.tokenizer.encode(text).ids == tokenizer.encode(text).ids


def test_a_permutation_left_out_would_show(exported):
    """attn_q in the file is not HF's q_proj: the reader's unpermute is doing something."""
    folder, path = exported["llama-tied"]
    q = {t.name: t for t in gguf.GGUFReader(path).tensors}["blk.0.attn_q.weight"]
    stored = gguf.quants.dequantize(q.data, q.tensor_type).reshape(64, 64)
    hf = Transformer.load(folder).state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not np.array_equal(stored, hf.numpy())
    assert np.array_equal(np.sort(stored, axis=None), np.sort(hf.numpy(), axis=None))


@contextmanager
def llama(llama_cpp, path: Path, **options):
    """llama.cpp on one thread with a float32 KV cache (its default is f16, which rounds keys
    and values to 11 bits, ~3e-3 of the logits of these sharp models), closed on exit."""
    f32 = int(gguf.GGMLQuantizationType.F32)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, n_threads_batch=1,
                          type_k=f32, type_v=f32, verbose=False, **options)
    try:
        yield llm
    finally:
        llm.close()


# llama.cpp in float32 against fournil in float32: the same function summed in other orders.
# A float32 sum of n terms is off by at most n * 2^-24 of their magnitude (7.6e-6 for the
# widest reductions here, n = 128); a logit goes through four of them in a row (attention and
# MLP of two layers), so 4 x 7.6e-6 ~ 3e-5 of the largest logit bounds the difference
# (measured: 1e-6 to 7e-6).
RELATIVE_TOLERANCE = 3e-5


@pytest.mark.parametrize("case", CASES)
def test_llama_cpp_runs_each_family_like_fournil(llama_cpp, exported, case):
    folder, path = exported[case]
    model = Transformer.load(folder).eval()
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT]))[0].numpy()
    greedy = generate(model, PROMPT[:4], 20, temperature=0)
    assert len(set(greedy)) > 5  # a path that wanders, which tells engines apart
    with llama(llama_cpp, path, logits_all=True) as llm:
        llm.eval(PROMPT)
        theirs = np.array(llm.scores[:len(PROMPT)])  # a copy: reset() reuses the buffer
        llm.reset()
        assert list(islice(llm.generate(PROMPT[:4], temp=0.0, repeat_penalty=1.0), 20)) \
            == greedy
    assert np.abs(theirs - logits).max() < RELATIVE_TOLERANCE * np.abs(logits).max()


def test_what_llama_cpp_cannot_run_is_refused(tiny_hf_model, tmp_path):
    folder = tiny_hf_model("qwen3-bias", Qwen3Config, head_dim=16, attention_bias=True)
    with pytest.raises(ValueError, match="qwen3 architecture has no attention biases"):
        export_gguf(folder, tmp_path / "m.gguf")
    folder = tiny_hf_model("llama-llama3", LlamaConfig, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    with pytest.raises(ValueError, match="rope_type 'llama3'"):
        export_gguf(folder, tmp_path / "m.gguf")
    assert not list(tmp_path.iterdir())


# --- the pre-tokenizer: the base's, so llama.cpp cuts text where its tokenizer does ---------

TEXTS = [
    "Le 14 juillet 1789, la Bastille tombe.",
    "Tableau :         2 (35.408)   |  1 234 567,89 F",
    "l'été où « j'ai » vu ça… I'LL DO IT, it's 10%",
    "  deux  espaces\n\n\ttab   \n",
    "<|im_start|>user\nBonjour !<|im_end|>\n",
    "Œuvre naïve, ½ litre, x² ; 🥖 et 東京",
]


def _tokenizer(pre: str, ignore_merges: bool) -> Tokenizer:
    """A byte-level BPE trained on TEXTS with the pre-tokenizer llama.cpp calls `pre`, BOS not
    added (Qwen2's and SmolLM2's habit): a vocabulary with runs of spaces and digits."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=1, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 20, trainer=trainer)
    if ignore_merges:  # Llama 3's tokenizer.json and llama.cpp's llama-bpe
        data = json.loads(tok.to_str())
        data["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(data))
    return tok


@pytest.mark.parametrize("pre", ["smollm", "qwen2", "llama-bpe", "gpt-2"])
def test_llama_cpp_cuts_text_like_the_base_tokenizer(llama_cpp, pre, tmp_path):
    tok = _tokenizer(pre, ignore_merges=pre == "llama-bpe")
    assert pre_tokenizer_name(tok) == pre
    folder = tmp_path / "model"
    vocab = tok.get_vocab_size()
    Transformer(TransformerConfig(vocab_size=vocab, hidden_size=32, num_layers=1, num_heads=2,
                                  num_kv_heads=1, head_dim=16, intermediate_size=64,
                                  max_seq_len=64, family="qwen2", qk_norm=False,
                                  qkv_bias=True)).save(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": "<|im_end|>", "add_bos_token": False}))
    path = export_gguf(folder, tmp_path / "m.gguf", "f32")
    back = read_gguf(path).tokenizer
    with llama(llama_cpp, path, vocab_only=True) as llm:
        for text in TEXTS:
            ours = tok.encode(text).ids
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ours, (pre, text)
            assert back.encode(text).ids == ours, (pre, text)
    # a different cut is caught: llama.cpp told `gpt-2` cuts "     2" otherwise than smollm
    if pre == "smollm":
        wrong = export_gguf(folder, tmp_path / "gpt2.gguf", "f32", pre_tokenizer="gpt-2")
        with llama(llama_cpp, wrong, vocab_only=True) as llm:
            assert any(llm.tokenize(t.encode(), add_bos=False, special=True)
                       != tok.encode(t).ids for t in TEXTS)
