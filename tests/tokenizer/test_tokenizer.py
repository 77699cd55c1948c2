import json

from transformers import AutoTokenizer

from fournil.formats.chatml import ENDOFTEXT, IM_END, IM_START
from fournil.tokenizer.train import save_tokenizer, token_byte_lengths, train_tokenizer

TEXTS = [
    "Il y a terriblement d'années, je m'en allais chasser le gibier d'eau dans les marais.",
    "La diligence passait à la patte d'oie du château de Rueil en 1874, à 12 h 35.",
    "Cette personne, très remarquable, portait un manteau de voyage et un chapeau noir.",
] * 20


def _trained(tmp_path, vocab_size=400):
    tok = train_tokenizer(TEXTS, vocab_size=vocab_size, min_frequency=1, show_progress=False)
    save_tokenizer(tok, tmp_path, max_length=256)
    return tok


def test_special_tokens_and_bos(tmp_path):
    tok = _trained(tmp_path)
    assert [tok.token_to_id(t) for t in (ENDOFTEXT, IM_START, IM_END)] == [0, 1, 2]
    enc = tok.encode("Bonjour")
    assert enc.ids[0] == 0  # the document boundary is prepended, as in training
    assert tok.decode(enc.ids) == "Bonjour"
    assert tok.encode("Bonjour", add_special_tokens=False).ids[0] != 0


def test_digits_are_split_one_by_one(tmp_path):
    tok = _trained(tmp_path)
    pieces = tok.encode("en 1874", add_special_tokens=False).tokens
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["1", "8", "7", "4"]


def test_round_trip_is_lossless(tmp_path):
    tok = _trained(tmp_path)
    text = "Œuvre « complète » — été 2024 : naïveté, cœur, ½ et 😀 !\n\tFin."
    assert tok.decode(tok.encode(text).ids) == text


def test_byte_lengths_sum_to_utf8_bytes(tmp_path):
    tok = _trained(tmp_path)
    lengths = token_byte_lengths(tok)
    text = "Été à Noël : « ça » coûte 12 €."
    ids = tok.encode(text).ids
    assert lengths[ids].sum() == len(text.encode("utf-8"))
    assert lengths[0] == lengths[1] == lengths[2] == 0


def test_transformers_loads_it_with_chat_template(tmp_path):
    tok = _trained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf("Bonjour").input_ids == tok.encode("Bonjour").ids
    assert hf.eos_token == ENDOFTEXT and hf.bos_token == ENDOFTEXT
    chat = hf.apply_chat_template([{"role": "user", "content": "Salut"}],
                                  tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nSalut<|im_end|>\n<|im_start|>assistant\n"
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 256
