"""Correction decoding with models that do something: a tiny corrector trained in the session
(it fixes the OCR errors it was taught, copies what is right, and rewrites text it does not
know, as small models do), on fournil's engine and on transformers', one sequence at a time
and in lockstep batches; and SmolLM2 as a GGUF under llama.cpp."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FRENCH, plant_ocr_errors

from fournil.eval import ocr
from fournil.eval.corrector import DEFAULT, Correction, Corrector, change
from fournil.eval.gguf_lm import LlamaCppLM
from fournil.eval.lm import load_lm
from fournil.formats.prompts import ocr_messages
from fournil.model.copy_decoding import CopyBias

SENTENCES = sorted(set(FRENCH))
UNKNOWN = "Le boulanger vend du pain chaud au marché de la ville."  # right, and never seen


@pytest.fixture(scope="module")
def engines(tiny_corrector_dir):
    return {"fournil": load_lm(tiny_corrector_dir), "hf": load_lm(f"hf:{tiny_corrector_dir}")}


def test_errors_it_knows_are_fixed_and_right_text_is_kept(engines):
    noisy = [plant_ocr_errors(s) for s in SENTENCES]
    assert all(n != s for n, s in zip(noisy, SENTENCES, strict=True))
    for lm in engines.values():
        corrector = Corrector(lm, DEFAULT)
        assert corrector.correct(noisy) == SENTENCES  # a confident fix passes the margin
        assert corrector.correct(SENTENCES) == SENTENCES


def test_text_it_does_not_know_is_left_alone(engines):
    """Greedy decoding rewrites a right sentence it has not seen into sentences it has;
    copy-biased decoding changes less of it, and the confidence rule keeps it."""
    lm = engines["fournil"]
    greedy = lm.chat(ocr_messages(UNKNOWN), 64)
    biased = lm.chat_copying(ocr_messages(UNKNOWN), UNKNOWN, CopyBias(DEFAULT.margin,
                                                                      DEFAULT.span), 64)
    assert change(greedy, UNKNOWN) > 0.5
    assert change(biased, UNKNOWN) < change(greedy, UNKNOWN)
    assert Corrector(lm, DEFAULT).correct([UNKNOWN]) == [UNKNOWN]


def test_the_engines_and_the_batched_path_answer_alike(engines):
    """The same weights through fournil and transformers, and transformers' lockstep batch
    (the copy bias as a logits processor, as on a GPU) against one sequence at a time with
    the draft verified k tokens a pass: the same answers, since every choice is one logit
    gap against the margin, far from float noise on a model this sure of itself."""
    pieces = [plant_ocr_errors(SENTENCES[0]), UNKNOWN, SENTENCES[1], plant_ocr_errors(
        SENTENCES[2])]
    for correction in (Correction(margin=0.0), DEFAULT, Correction(margin=2.0)):
        answers = {name: Corrector(lm, correction, max_new_tokens=64).raw(pieces)
                   for name, lm in engines.items()}
        hf = engines["hf"]
        hf.lockstep = True
        try:
            answers["lockstep"] = Corrector(hf, correction, max_new_tokens=64).raw(pieces)
        finally:
            hf.lockstep = False
        assert answers["fournil"] == answers["hf"] == answers["lockstep"], correction


def test_an_ocr_pass_with_a_corrector_that_works(engines):
    pairs = [ocr.Pair(f"p{i}", plant_ocr_errors(s), s, subset="known")
             for i, s in enumerate(SENTENCES)] + [ocr.Pair("u", UNKNOWN, UNKNOWN, "unknown")]
    result = ocr.evaluate_ocr(Corrector(engines["hf"], DEFAULT), pairs, batch_size=2)
    assert result["by_subset"]["known"]["cer_before"] > 0
    assert result["by_subset"]["known"]["cer_after"] == 0
    assert result["by_subset"]["known"]["better"] == 1.0
    assert result["by_subset"]["unknown"]["cer_after"] == 0  # kept by the rule
    assert result["worse"] == 0 and result["kept_input"] == pytest.approx(1 / 5)


def _top_logprobs(rows):
    """Log-probabilities of each row's 20 likeliest tokens (what a decision compares)."""
    top = rows.topk(20, dim=-1).indices
    return rows.log_softmax(-1).gather(-1, top), top


def test_llama_cpp_scores_drafts_and_cuts_back(llama_cpp, smollm2_gguf_path):
    """SmolLM2's GGUF under llama.cpp as a Scorer: a draft read in one batch scores as it
    does token by token, and after a cut back the context scores as if the cut tokens had
    never been read. llama.cpp quantises a matmul's activations to 8 bits (±0.4% of a
    block's largest value) with kernels chosen by batch size, through 30 layers, so the
    same token read in another batch does not get the same logits to the bit: the log-
    probabilities of the likeliest tokens may move by a fraction of a nat (measured: up to
    0.45); the test allows 1 (a probability within a factor e), and near-ties may go either
    way, hence no test here that margin 0 reproduces the token-by-token greedy answer, as
    it does exactly on fournil's engine and transformers' (test_copy_decoding.py). An
    infinite margin copies."""
    lm = LlamaCppLM(smollm2_gguf_path, n_ctx=1024, threads=1)
    source = "Le cbat dort fur le tapis de la maifon."
    prompt, draft = lm.chat_ids(ocr_messages(source)), lm.encode(source)
    batched = lm.new_scorer()
    batched.start(prompt)
    at_once = batched.feed(draft)
    one_by_one = lm.new_scorer()
    one_by_one.start(prompt)
    singles = torch.stack([one_by_one.feed([t])[-1] for t in draft])
    expected, top = _top_logprobs(at_once)
    assert (singles.log_softmax(-1).gather(-1, top) - expected).abs().max() < 1.0
    one_by_one.truncate(len(prompt) + 3)  # cut back, then read the rest again
    again = one_by_one.feed(draft[3:])
    assert (again.log_softmax(-1).gather(-1, top[3:]) - expected[3:]).abs().max() < 1.0
    for source in ("Le cbat dort fur le tapis de la maifon.", "Il étoit une fois un roi."):
        assert lm.chat_copying(ocr_messages(source), source, CopyBias(math.inf), 40) == source
    assert load_lm(smollm2_gguf_path).name == str(smollm2_gguf_path)  # a .gguf path
