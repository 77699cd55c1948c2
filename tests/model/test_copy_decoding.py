"""Copy-biased decoding (fournil.model.copy_decoding): the rule on hand-made logits, the
realignment on hand-made strings, whole decodes driven by models written out as logits (a
word-level vocabulary, so that each case can be followed by hand), and, on a real model,
margin 0 giving exactly greedy decoding through the speculative path."""

from __future__ import annotations

import math
import re

import pytest
import torch

from fournil.eval.lm import load_lm
from fournil.formats.prompts import ocr_messages
from fournil.model.copy_decoding import CopyBias, CopyCursor, Scorer, choose, copy_decode, realign

# --- the rule --------------------------------------------------------------------------------


def test_the_draft_is_kept_unless_the_top_token_beats_it_by_more_than_the_margin():
    logits = torch.tensor([0.0, 3.0, 1.0, 0.5])  # top: 1; the draft 2 is 2 nats behind it
    assert choose(logits, 2, margin=1.0) == 1
    assert choose(logits, 2, margin=2.0) == 2  # not more than the margin: kept
    assert choose(logits, 2, margin=3.0) == 2
    assert choose(logits, 2, margin=0.0) == 1  # greedy
    assert choose(logits, 1, margin=0.0) == 1  # the draft is the top token
    assert choose(logits, 0, margin=math.inf) == 0  # a copy, whatever the model says
    assert choose(logits, None, margin=10.0) == 1  # no draft: the model's token
    # a difference of logits is one of log-probabilities: shifting them changes nothing
    assert choose(logits + 100.0, 2, margin=1.9) == choose(logits, 2, margin=1.9) == 1


def test_realignment_finds_where_the_copy_resumes():
    source = "la mai son est belle"
    # the model wrote "son" for the source's " son" (merging "mai son"): resume before " est"
    assert realign(source, 6, "son") == 10
    # it wrote " maison" for "maison" (splitting "lamaison"): resume before " est"
    assert realign("lamaison est", 2, " maison") == 8
    # it wrote nothing like the source: the closest boundary in length
    assert realign("un deux", 0, "xyz") == 2
    assert realign("un", 0, "un deux trois") == 2  # never past the end


# --- whole decodes, on models written out as logits ------------------------------------------

WORD = re.compile(r" ?[^ ]+| +")
END = 0


class Words:
    """A word-level vocabulary: each word with the space before it is one token (as BPE
    makes them); 0 ends the answer."""

    def __init__(self, *texts: str) -> None:
        self.vocab = ["<end>", *sorted({w for t in texts for w in WORD.findall(t)})]
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        return [self.ids[w] for w in WORD.findall(text)]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids if i != END)


class Wants(Scorer):
    """A model that wants to write `target`, whatever it is shown: after the prompt, the
    logit of target's next token (by position; the end after it) is `confidence` above
    every other token's."""

    def __init__(self, words: Words, target: str, confidence: float, prompt_len: int) -> None:
        super().__init__()
        self.target = [*words.encode(target), END]
        self.size, self.confidence, self.prompt_len = len(words.vocab), confidence, prompt_len

    def _forward(self, ids: list[int]) -> torch.Tensor:
        rows = torch.zeros(len(ids), self.size)
        for i in range(len(ids)):
            written = len(self.ids) + i + 1 - self.prompt_len
            rows[i, self.target[min(written, len(self.target) - 1)]] = self.confidence
        return rows

    def _truncate(self, length: int) -> None:
        pass  # nothing is cached: the logits depend on the position only


class Bytes:
    """A byte-level vocabulary: token b + 1 is byte b, 0 ends the answer. A character of
    several UTF-8 bytes is several tokens, as rare characters are in byte-level BPE."""

    vocab = range(257)

    def encode(self, text: str) -> list[int]:
        return [b + 1 for b in text.encode()]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 1 for i in ids if i != END).decode("utf-8", "replace")


def decode(source: str, target: str, confidence: float, bias: CopyBias,
           words: Words | Bytes | None = None) -> str:
    words = words or Words(source, target)
    prompt = [END]  # one token of prompt
    scorer = Wants(words, target, confidence, len(prompt))
    cursor = CopyCursor(source, bias, words.encode, words.decode, END)
    return words.decode(copy_decode(scorer, prompt, cursor, max_new_tokens=50))


def test_a_confident_correction_is_made_and_an_unsure_one_is_not():
    assert decode("le cbat dort", "le chat dort", 5.0, CopyBias(4.0)) == "le chat dort"
    assert decode("le cbat dort", "le chat dort", 5.0, CopyBias(6.0)) == "le cbat dort"
    assert decode("le cbat dort", "le chat dort", 5.0, CopyBias(math.inf)) == "le cbat dort"


def test_the_copy_resumes_after_a_split_word_is_joined_and_a_joined_one_split():
    # two source tokens (" mai", " son") become one (" maison"): the copy picks up at " est"
    assert decode("la mai son est", "la maison est", 5.0, CopyBias(4.0)) == "la maison est"
    assert decode("lamaison est", "la maison est", 5.0, CopyBias(4.0)) == "la maison est"


def test_a_departure_is_held_to_span_words():
    source, target = "le chat dort bien ici", "Bonjour à tout le monde"
    free = decode(source, target, 10.0, CopyBias(4.0))
    assert free == target  # a confident model rewrites everything
    held = decode(source, target, 10.0, CopyBias(4.0, span=1))
    # after each rewritten word the source is taken back where realignment puts it:
    # "Bonjour" is as far from "le", "le chat" and "" (7 edits), and as long as "le chat";
    # " tout" is closest to " bien"; then the source ends, and so does the answer
    assert held == "Bonjour dort tout ici"


def test_a_departure_never_cuts_a_character_in_two():
    # ſ is C5 BF and ň C5 88: a model that wants ň agrees with the draft on C5, and may not
    # then write 88 after it (it would write neither); s is one byte: ſ -> s is a correction
    assert decode("la maiſon", "la maiňon", 10.0, CopyBias(4.0), Bytes()) == "la maiſon"
    assert decode("la maiſon", "la maison", 10.0, CopyBias(4.0), Bytes()) == "la maison"
    assert decode("un été", "un ete", 10.0, CopyBias(4.0), Bytes()) == "un ete"


def test_the_answer_ends_where_the_source_ends_unless_greedy():
    source, target = "le chat", "le chat dort bien"
    assert decode(source, target, 10.0, CopyBias(4.0)) == "le chat"
    assert decode(source, target, 10.0, CopyBias(0.0)) == target  # greedy goes on


def test_bad_copy_bias_settings_are_refused():
    for margin, span in ((-1.0, 0), (math.nan, 0), (1.0, -1)):
        with pytest.raises(ValueError, match="copy bias"):
            CopyBias(margin, span)


# --- a real model: margin 0 is greedy decoding, verified k tokens a pass --------------------

SOURCES = ["Le cbat boit du lalt.", "Les enfants du vil1age venaient acheter des croissants."]


@pytest.mark.parametrize("engine", ["fournil", "hf"])
def test_margin_zero_is_exactly_greedy_on_a_real_model(tiny_chat_model_dir, engine):
    """A random model departs from the source at once and often comes back to it, so the
    speculative path (verify, cut the cache back, depart, realign) runs many times; its
    answer must be greedy decoding's, token for token."""
    lm = load_lm(f"{engine}:{tiny_chat_model_dir}")
    for source in SOURCES:
        messages = ocr_messages(source)
        assert lm.chat_copying(messages, source, CopyBias(0.0), 24) == lm.chat(messages, 24)
    # and a copy is a copy
    assert lm.chat_copying(ocr_messages(SOURCES[0]), SOURCES[0], CopyBias(math.inf),
                           40) == SOURCES[0]
