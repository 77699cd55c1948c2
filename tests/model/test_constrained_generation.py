"""Generation under a quote constraint, with real models: the tiny random fournil model (which
writes garbage unconstrained) through fournil's engine and through transformers', and
SmolLM2-135M-Instruct through transformers'. Constrained, every quote a model opens is
closed and verbatim in the source it cites, whatever the sampler and the budget."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer

from fournil.formats.citations import check_citations
from fournil.formats.prompts import rag_messages
from fournil.formats.quote_constraint import CLOSE_MARGIN, QuoteConstraint
from fournil.formats.token_trie import TokenTrie
from fournil.model.generate import constrain, generate, stop_token_ids
from fournil.serve.engine import HFServedModel, Sampling, ServedModel, iter_hf_tokens

SOURCES = {
    "1": "Chaque matin, elle pétrissait la pâte et enfournait le pain avant l'aube.",
    "2": "Les enfants du village venaient acheter des croissants encore tièdes.\n\n"
         "« Bonjour ! » disait-elle, et l'odeur du pain chaud emplissait la rue.",
}
QUESTION = "Que faisait la boulangère chaque matin ?"
OPENING = '<ref name="1">'  # the answer starts quoting: every generation has a quote to check


def quote_rate(answers: list[str], sources: dict[str, str]) -> tuple[int, int]:
    """(refs opened, of them closed and verbatim): an unclosed ref counts as not verbatim."""
    opened = sum(a.count('<ref name="') for a in answers)
    return opened, sum(check_citations(a, sources).verbatim for a in answers)


@pytest.fixture(scope="module")
def tiny(tiny_chat_model_dir):
    served = ServedModel(tiny_chat_model_dir)
    prompt = served.encode_chat(rag_messages(QUESTION, list(SOURCES.items())))
    return served.model, served.tokenizer, TokenTrie.from_tokenizer(served.tokenizer), prompt


def started(trie: TokenTrie, tokenizer: Tokenizer, constrained: bool
            ) -> tuple[list[int], QuoteConstraint | None]:
    """The opening's token ids, and the constraint having followed them (or None)."""
    opening = tokenizer.encode(OPENING, add_special_tokens=False).ids
    if not constrained:
        return opening, None
    constraint = QuoteConstraint(trie, SOURCES)
    for token in opening:
        constraint.advance(token)
    return opening, constraint


@pytest.mark.parametrize("sampling", [dict(temperature=1.0), dict(temperature=0.7, top_k=20),
                                      dict(temperature=1.3, top_p=0.9)])
def test_the_tiny_random_model_quotes_verbatim_only_when_constrained(tiny, sampling):
    model, tokenizer, trie, prompt = tiny
    rates = {}
    for constrained in (False, True):
        answers = []
        for seed in range(8):
            opening, constraint = started(trie, tokenizer, constrained)
            new = generate(model, prompt + opening, 40, seed=seed, constraint=constraint,
                           stop_ids=stop_token_ids(tokenizer), **sampling)
            answers.append(OPENING + tokenizer.decode(new, skip_special_tokens=True))
        rates[constrained] = quote_rate(answers, SOURCES)
    opened, verbatim = rates[True]
    assert opened == verbatim >= 8, rates
    opened, verbatim = rates[False]  # random bytes: hardly ever a closed verbatim quote
    assert opened >= 8 and verbatim < opened, rates


def test_a_short_budget_still_closes_the_quote(tiny):
    """A quote opened with CLOSE_MARGIN tokens left is closed in time (a ref the model opens
    itself is only allowed with room to close it: tests/formats/test_quote_constraint.py)."""
    model, tokenizer, trie, prompt = tiny
    for budget in (CLOSE_MARGIN, CLOSE_MARGIN + 1, CLOSE_MARGIN + 3, 2 * CLOSE_MARGIN):
        opening, constraint = started(trie, tokenizer, True)
        new = generate(model, prompt + opening, budget, temperature=1.0, seed=budget,
                       constraint=constraint)
        answer = OPENING + tokenizer.decode(new, skip_special_tokens=True)
        assert len(new) == budget and not constraint.in_ref, answer
        assert quote_rate([answer], SOURCES) == (1, 1), answer


def test_constrain_masks_only_what_the_constraint_forbids(tiny):
    model, tokenizer, trie, _ = tiny
    opening, constraint = started(trie, tokenizer, True)
    logits = torch.randn(model.config.vocab_size + 5)  # a padded embedding: 5 more ids
    masked = constrain(logits, constraint, remaining=100)
    keep = torch.from_numpy(constraint.allowed(100))
    assert torch.isinf(masked[trie.vocab_size:]).all()
    assert torch.equal(masked[:trie.vocab_size][keep], logits[:trie.vocab_size][keep])
    assert torch.isinf(masked[:trie.vocab_size][~keep]).all() and 0 < keep.sum() < 50
    assert constrain(logits, None, 100) is logits


def test_the_transformers_engine_takes_the_same_constraint(tiny_chat_model_dir, tiny):
    """The tiny export run by transformers (Qwen3ForCausalLM) through `iter_hf_tokens`."""
    _, tokenizer, trie, prompt = tiny
    served = HFServedModel(tiny_chat_model_dir)
    answers = []
    for seed in range(6):
        opening, constraint = started(trie, tokenizer, True)
        sampling = Sampling(max_tokens=30, temperature=1.0, seed=seed, constraint=constraint)
        new = list(iter_hf_tokens(served.model, prompt + opening, sampling, served.stop_ids,
                                  served.max_seq_len))
        answers.append(OPENING + tokenizer.decode(new, skip_special_tokens=True))
    assert quote_rate(answers, SOURCES) == (6, 6), answers


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two made SmolLM2 4-8x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_smollm2_quotes_verbatim_when_constrained(smollm2_dir, one_thread):
    """A real instruct model with fournil's RAG prompt: greedy, constrained, every quote it
    writes (the one it is started on and any other) is verbatim."""
    served = HFServedModel(smollm2_dir)
    trie = TokenTrie.from_tokenizer(served.tokenizer)
    answers = []
    for question in (QUESTION, "Qu'achetaient les enfants du village ?"):
        prompt = served.encode_chat(rag_messages(question, list(SOURCES.items())))
        opening, constraint = started(trie, served.tokenizer, True)
        sampling = Sampling(max_tokens=40, temperature=0.0, constraint=constraint)
        new = list(served.tokens(prompt + opening, sampling))
        answers.append(OPENING + served.tokenizer.decode(new, skip_special_tokens=True))
    opened, verbatim = quote_rate(answers, SOURCES)
    assert opened == verbatim >= 2, answers
