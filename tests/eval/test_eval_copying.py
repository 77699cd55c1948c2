"""The in-context copying probe (`fournil.eval.copying`): its passages, its scores against
plain forward passes, and a real model that copies (SmolLM2-135M) told apart from one that
cannot (a random tiny Transformer)."""

from __future__ import annotations

import shutil

import pytest
import torch

from fournil.eval.copying import copy_passages, evaluate_copying
from fournil.eval.lm import load_lm
from fournil.model.config import TransformerConfig
from fournil.model.transformer import Transformer

TEXT = ("Le boulanger se leva avant l'aube, alluma le four de briques et pétrit la pâte qu'il "
        "avait laissée lever toute la nuit sous un linge humide. Quand les premières miches "
        "dorèrent, l'odeur du pain chaud descendit la rue jusqu'à la place du marché, où les "
        "marchandes installaient déjà leurs étals de légumes, de fromages et de fleurs.")


def test_passages_are_shuffled_windows_of_the_documents():
    docs = [{"text": TEXT}, {"text": "et la suite"}]
    passages = copy_passages(docs, 5, words=12, seed=3)
    assert passages == copy_passages(docs, 5, words=12, seed=3)  # reproducible
    assert passages != copy_passages(docs, 5, words=12, seed=4)
    words = (TEXT + " et la suite").split()
    windows = [sorted(words[i:i + 12]) for i in range(len(words) - 11)]
    in_order = [words[i:i + 12] for i in range(len(words) - 11)]
    for passage in passages:
        assert len(passage.split()) == 12 and sorted(passage.split()) in windows
        assert passage.split() not in in_order  # shuffled
    short = "un deux trois quatre cinq six sept huit neuf"
    assert sorted(copy_passages([{"text": short}], 1, words=12)[0].split()) == sorted(short.split())
    with pytest.raises(ValueError, match="3 words, fewer than the 8"):
        copy_passages([{"text": "et la suite"}], 2, words=12)


def _direct(lm, passage: str) -> tuple[float, float]:
    """Mean loss on each reading's tokens after its first, from one plain forward pass."""
    ids = lm.encode(" " + passage)
    n, seq = len(ids), lm.with_bos(ids + ids)
    offset = len(seq) - 2 * n
    with torch.no_grad():
        logprobs = lm.logits(torch.tensor([seq]))[0].log_softmax(-1)
    def loss(start: int) -> float:  # tokens start + 1 .. start + n - 1 of `seq`
        return -sum(float(logprobs[i - 1, seq[i]]) for i in range(start + 1, start + n)) / (n - 1)
    return loss(offset), loss(offset + n)


@pytest.fixture(scope="module")
def random_model(tiny_tokenizer_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("copy") / "ckpt"
    torch.manual_seed(0)
    Transformer(TransformerConfig(vocab_size=320, hidden_size=64, num_layers=2, num_heads=4,
                                  num_kv_heads=2, head_dim=16, intermediate_size=128,
                                  max_seq_len=256)).save(folder)
    shutil.copyfile(tiny_tokenizer_dir / "tokenizer.json", folder / "tokenizer.json")
    return load_lm(folder)


def test_scores_match_plain_forward_passes(random_model):
    lm = random_model
    assert lm.bos is not None  # our tokenizer adds one: the readings start at offset 1
    passages = copy_passages([{"text": TEXT}], 3, words=10)
    result = evaluate_copying(lm, passages)
    assert result["n"] == 3
    for item, passage in zip(result["items"], passages, strict=True):
        first, second = _direct(lm, passage)
        assert item["loss_first"] == pytest.approx(first, abs=1e-4)
        assert item["loss_second"] == pytest.approx(second, abs=1e-4)
    weights = [i["tokens"] - 1 for i in result["items"]]  # the mean is over tokens
    mean = sum(i["loss_second"] * (i["tokens"] - 1) for i in result["items"]) / sum(weights)
    assert result["loss_second"] == pytest.approx(mean)
    assert result["copy_gain"] == pytest.approx(result["loss_first"] - result["loss_second"])


def test_a_model_that_copies_and_one_that_cannot(smollm2_dir, random_model):
    passages = copy_passages([{"text": TEXT}], 4, words=30)
    smol = load_lm(smollm2_dir)
    assert smol.bos is None  # no BOS: the readings start at offset 0
    for item, passage in zip(evaluate_copying(smol, passages)["items"], passages, strict=True):
        first, second = _direct(smol, passage)
        assert (item["loss_first"], item["loss_second"]) == pytest.approx((first, second),
                                                                          abs=1e-3)
    copies = evaluate_copying(smol, passages)
    # SmolLM2 has induction heads: the second reading is nearly free
    assert copies["accuracy_second"] > 0.8 > 0.3 > copies["accuracy_first"]
    assert copies["loss_second"] < 0.2 * copies["loss_first"]
    cannot = evaluate_copying(random_model, passages)
    assert cannot["accuracy_second"] < 0.2
    assert abs(cannot["copy_gain"]) < 0.5 < copies["copy_gain"]
