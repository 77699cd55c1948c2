"""`bits_per_byte` (the number on the model card, in every bench and report) against a
computation by hand: a real tokenizer, a real tiny Transformer, held-out token shards written
as the tokens stage writes them, and the expected value rebuilt from plain forward passes over
the windows and from the UTF-8 bytes of the text itself (not from the token byte table that
`bits_per_byte` uses).

What is scored, and what the hand computation spells out: the documents of a source are
concatenated, each starting with `<|endoftext|>` (the BOS; no EOS is added), and cut into
windows of `seq_len` inputs and `seq_len` targets, one window after the other. Every token
after the first is a target exactly once, and the first target of a window is predicted from
the last token of the window before (as in training, where windows are cut the same way).
A target that is a special token (the next document's BOS) is neither a loss nor a byte. The
tokens after the last whole window are not scored, nor are their bytes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from fournil.eval.bpb import HeldOut, bits_per_byte
from fournil.model.config import TransformerConfig
from fournil.model.transformer import Transformer
from fournil.tokenizer.train import token_byte_lengths
from fournil.tokens.shards import TokenShardWriter

SEQ_LEN = 16
DIGITS = " n° 3141592653589793"  # 16 digits: one byte and one token each (digits are split)
SOURCES = {  # multibyte characters: é, ê, œ (unseen by the tokenizer: two byte tokens), «»,
    # the narrow no-break space before « ! » (3 bytes), the typographic apostrophe
    "contes": [
        "« Bonjour ! » disait-elle, et l’odeur du pain chaud emplissait la rue.",
        "Chaque matin, elle pétrissait la pâte ; son cœur battait, œuvre faite, à l’aube. "
        "Les enfants du village venaient acheter des croissants encore tièdes." + DIGITS,
    ],
    "notes": ["Il était une fois une sœur et un frère\u202f!" + DIGITS],
}
F32_EPS = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=320, hidden_size=64, num_layers=2, num_heads=4,
                            num_kv_heads=2, head_dim=16, intermediate_size=128, max_seq_len=64)
    model = Transformer(cfg)
    with torch.no_grad():  # far from uniform, so a misaligned target changes the loss a lot
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def held_out(tokenizer, tmp_path_factory) -> HeldOut:
    val = tmp_path_factory.mktemp("bpb") / "val"
    writer = TokenShardWriter(val, np.dtype("<u2"))
    for source, texts in SOURCES.items():
        for k, text in enumerate(texts):
            writer.add(tokenizer.encode(text).ids, {"id": f"{source}/{k}", "source": source,
                                                    "license": "CC0-1.0"}, len(text.encode()))
    writer.close()
    return HeldOut(val, max_tokens_per_source=10_000)


def test_the_hand_built_case_is_what_it_claims(tokenizer, held_out):
    bos = tokenizer.token_to_id("<|endoftext|>")
    assert tokenizer.encode("œ").ids[0] == bos and len(tokenizer.encode("œ").ids) == 3
    digits = tokenizer.encode(DIGITS).ids[-16:]
    assert [tokenizer.decode([t]) for t in digits] == list(DIGITS[-16:])
    for source, texts in SOURCES.items():
        stream = held_out.tokens[source]
        assert [int(t) for t in stream] == [t for text in texts
                                            for t in tokenizer.encode(text).ids]
        assert len(stream) - 1 > SEQ_LEN  # more than one window
        assert 0 < (len(stream) - 1) % SEQ_LEN  # a tail that is not scored ...
        assert (len(stream) - 1) % SEQ_LEN <= len(digits)  # ... made of whole digits


def _by_hand(model, tokenizer, stream: np.ndarray, texts: list[str]) -> dict:
    """Nats (float64) over the windows' non-special targets, each window one plain forward
    pass of its own; bytes from the text, less the unscored digits of the tail."""
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    n_windows = (len(stream) - 1) // SEQ_LEN
    nats, tokens, max_logit = 0.0, 0, 0.0
    for w in range(n_windows):
        ids = torch.tensor(stream[w * SEQ_LEN: (w + 1) * SEQ_LEN + 1], dtype=torch.long)
        with torch.no_grad():
            logits = model(ids[None, :-1])[0].double()
        logprobs = logits.log_softmax(-1)
        max_logit = max(max_logit, float(logits.abs().max()))
        for pos, target in enumerate(ids[1:].tolist()):
            if target not in special:
                nats -= float(logprobs[pos, target])
                tokens += 1
    unscored_digits = len(stream) - 1 - n_windows * SEQ_LEN
    n_bytes = sum(len(t.encode("utf-8")) for t in texts) - unscored_digits
    return {"nats": nats, "tokens": tokens, "bytes": n_bytes, "max_logit": max_logit}


def _tolerance(hand: dict, n_tokens: int, vocab: int, reduction: int, layers: int) -> float:
    """A bound, in nats, on what float32 arithmetic can move the sum, from the worst-case
    rounding of a length-n reduction (n * eps times the magnitude, Higham's gamma_n):
    each logit may differ by `layers` reductions of length `reduction` (the windows are
    batched there, one at a time here, so the kernels may sum in another order), a token's
    loss by twice that plus its float32 log-sum-exp over the vocabulary, and the float32 sum
    of the losses by n_tokens * eps of the total."""
    logit = layers * reduction * F32_EPS * hand["max_logit"]
    per_token = 2 * logit + vocab * F32_EPS * (1 + hand["max_logit"])
    return n_tokens * per_token + n_tokens * F32_EPS * hand["nats"]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_bits_per_byte_is_the_hand_computed_value(model, tokenizer, held_out, batch_size):
    token_bytes = token_byte_lengths(tokenizer)
    result = bits_per_byte(model, held_out, token_bytes, SEQ_LEN, batch_size=batch_size)
    total = {"nats": 0.0, "tokens": 0, "bytes": 0, "tol": 0.0}
    for source, texts in SOURCES.items():
        hand = _by_hand(model, tokenizer, held_out.tokens[source], texts)
        got = result["by_source"][source]
        assert (got["tokens"], got["bytes"]) == (hand["tokens"], hand["bytes"]), source
        tol = _tolerance(hand, hand["tokens"], vocab=320, reduction=128, layers=3)
        assert got["nats"] == pytest.approx(hand["nats"], abs=tol), source
        assert got["bpb"] == pytest.approx(hand["nats"] / (math.log(2) * hand["bytes"]),
                                           abs=tol / (math.log(2) * hand["bytes"])), source
        assert got["loss"] == pytest.approx(hand["nats"] / hand["tokens"],
                                            abs=tol / hand["tokens"]), source
        for key in ("nats", "tokens", "bytes"):
            total[key] += hand[key]
        total["tol"] += tol
    # overall: the sources' nats over their bytes, not a mean of their bpb
    assert (result["tokens"], result["bytes"]) == (total["tokens"], total["bytes"])
    scale = math.log(2) * total["bytes"]
    assert result["bpb"] == pytest.approx(total["nats"] / scale, abs=total["tol"] / scale)
