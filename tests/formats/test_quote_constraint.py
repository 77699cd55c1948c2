"""The quote constraint against brute force: the suffix automaton's answers against substring
search, the trie walk's allowed tokens against every token of the vocabulary stepped through
the machine byte by byte, and random walks through allowed tokens against
`check_citations` (every quote closed and verbatim), on fournil's tokenizer and on SmolLM2's
49k-token one."""

from __future__ import annotations

import random

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from fournil.formats.citations import check_citations, squash
from fournil.formats.quote_constraint import (
    CLOSE_MARGIN,
    MIN_QUOTE_BYTES,
    START,
    QuoteConstraint,
    SuffixAutomaton,
    is_word_byte,
)
from fournil.formats.token_trie import TokenTrie, token_bytes

SOURCES = {
    "1": "Chaque matin, elle pétrissait la pâte et enfournait le pain avant l'aube.",
    "2": "Les enfants du village venaient acheter des croissants encore tièdes.\n\n"
         "« Bonjour ! » disait-elle, et l'odeur du pain chaud emplissait la rue.",
    "3": "Le four < 250 degrés, la boulangère   attendait.",
}


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def trie(tokenizer) -> TokenTrie:
    return TokenTrie.from_tokenizer(tokenizer)


def accepts(constraint: QuoteConstraint, text: str) -> bool:
    """Whether the machine accepts `text` from its start, byte by byte (no budget)."""
    s = START
    for c in text.encode():
        s = constraint.machine.step(s, c)
        if s is None:
            return False
    return True


def brute_force(constraint: QuoteConstraint) -> np.ndarray:
    """The allowed tokens by stepping every token's bytes through the machine (with the
    budget flags `allowed` set): what the trie walk must give, token for token."""
    keep = np.zeros(constraint.trie.vocab_size, dtype=bool)
    for i, b in enumerate(constraint.trie.bytes):
        if b is None:
            keep[i] = not constraint.in_ref
            continue
        s = constraint.state
        for c in b:
            s = constraint.machine.step(s, c)
            if s is None:
                break
        keep[i] = s is not None
    return keep


def random_walk(constraint: QuoteConstraint, tokenizer: Tokenizer, rng: random.Random,
                budget: int, check_every: int = 0) -> tuple[str, int, set[str]]:
    """`budget` tokens, each drawn from the allowed ones, steering into refs (an opening
    `<ref name="N">` is fed token by token whenever it is allowed). Returns the text, the
    states checked against brute force (every `check_every` steps) and the state kinds
    met."""
    trie = constraint.trie
    out: list[bytes] = []
    forced: list[int] = []
    checked, kinds = 0, set()
    for step in range(budget):
        keep = constraint.allowed(budget - step)
        kinds.add(constraint.state[0])
        if check_every and step % check_every == 0:
            expected = brute_force(constraint)
            got = keep if keep is not None else np.ones(trie.vocab_size, dtype=bool)
            assert (got == expected).all(), (constraint.state, np.flatnonzero(got != expected))
            checked += 1
        choices = np.flatnonzero(keep) if keep is not None else np.arange(trie.vocab_size)
        if not forced and constraint.state == START and rng.random() < 0.2:
            ref = rng.choice([*SOURCES, "9"])  # "9" is no source: its id must be refused
            forced = tokenizer.encode(f' <ref name="{ref}">', add_special_tokens=False).ids
        if forced and keep is not None and not keep[forced[0]]:
            forced = []  # the constraint refused the opening (budget, unknown id)
        token = forced.pop(0) if forced else int(rng.choice(choices))
        constraint.advance(token)
        out.append(trie.bytes[token] or b"")
    return b"".join(out).decode("utf-8", "replace"), checked, kinds


# --- the suffix automaton -----------------------------------------------------------------------

def test_suffix_automaton_matches_substring_search():
    data = (" " + squash(" ".join(SOURCES.values()))).encode()
    sam = SuffixAutomaton(data)
    rng = random.Random(0)
    tried = substrings = 0
    for _ in range(3000):
        a = rng.randrange(len(data))
        if rng.random() < 0.7:
            x = data[a:rng.randrange(a, min(len(data), a + 30)) + 1]
        else:
            x = bytes(rng.choice(data) for _ in range(rng.randrange(1, 5)))
        st = 0
        for c in x:
            st = sam.next[st].get(c)
            if st is None:
                break
        tried += 1
        assert (st is not None) == (x in data), x
        if st is None:
            continue
        substrings += 1
        ends = [i + len(x) for i in range(len(data)) if data.startswith(x, i)]
        after = [data[e] if e < len(data) else None for e in ends]
        assert sam.ends_word[st] == any(b is None or not is_word_byte(b) for b in after), x
        assert sam.ends_hard[st] == any(b is None or b == ord("<") for b in after), x
    assert substrings > 1500 and tried - substrings > 300  # both answers were exercised


# --- token bytes --------------------------------------------------------------------------------

def test_token_bytes_join_to_the_decoded_text(tokenizer, trie):
    text = "« Bonjour ! » disait-elle, l'œuvre de 4,5 € 🍞\n<ref name=\"1\">"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert b"".join(trie.bytes[i] for i in ids).decode() == text == tokenizer.decode(ids)
    special = [i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special]
    assert special and all(trie.bytes[i] is None for i in special)
    assert len(trie.keys) == trie.vocab_size - len(special) and trie.keys == sorted(trie.keys)


def test_a_tokenizer_whose_tokens_are_not_its_bytes_is_refused():
    # WordPiece decodes by joining words with spaces and gluing "##" pieces: a token's
    # string is not the bytes it adds to the text, so no constraint may be built on it
    vocab = {"[UNK]": 0, "bon": 1, "##jour": 2, "!": 3, "d": 4, "##'": 5, "a": 6}
    wordpiece = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.decoder = decoders.WordPiece()
    with pytest.raises(ValueError, match="cannot be read as bytes"):
        token_bytes(wordpiece)


# --- the rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ok", [
    ('Voici <ref name="1">Chaque matin, elle pétrissait</ref> et la suite.', True),
    ('<ref name="1"> Chaque matin, elle</ref>', True),  # one layout space after ">
    ('<ref name="1">  Chaque matin, elle</ref>', False),  # a second one is not
    ('<ref name="9">Chaque matin, elle</ref>', False),  # no source 9
    ('<ref name="1">haque matin, elle</ref>', False),  # starts inside a word
    ('<ref name="1">Chaque matin,  elle</ref>', False),  # a run of spaces
    ('<ref name="1">Chaque matin,\nelle</ref>', False),  # a line break
    ('<ref name="2">Les enfants</ref>', False),  # 11 bytes: shorter than MIN_QUOTE_BYTES
    ('<ref name="1">Chaque matin</ref>', True),  # 12
    ('<ref name="1">Chaque matin, elle pétris</ref>', False),  # cuts a word
    ('<ref name="1">l\'aube.</ref>', True),  # short, but the source ends there
    ('<ref name="2">encore tièdes. « Bonjour</ref>', True),  # the blank line is one space
    ('<ref name="3">Le four </ref>', True),  # the source's "<" ends a quote...
    ('<ref name="3">Le four < 250 degrés</ref>', False),  # ...and is never in one
    ('<ref name="3">la boulangère attendait.</ref>', True),  # the source's spaces, squashed
    ('<ref name="1">Chaque matin, elle pétrissait</ref> <ref name="2">Les enfants du '
     'village</ref>', True),
    ('<ref name=1>Chaque matin, elle</ref>', True),  # not a ref: free text
])
def test_what_a_quote_may_be(trie, text, ok):
    assert accepts(QuoteConstraint(trie, SOURCES), text) is ok
    assert MIN_QUOTE_BYTES == 12  # the short cases above are written for it


def test_inside_a_ref_no_special_token_and_no_foreign_byte(tokenizer, trie):
    c = QuoteConstraint(trie, SOURCES)
    for token in tokenizer.encode('Selon <ref name="2">Les enfants', add_special_tokens=False).ids:
        c.advance(token)
    keep = c.allowed(100)
    assert not keep[trie.special].any()  # the model cannot end its turn inside a quote
    rest = " du village venaient acheter des croissants encore tièdes. « Bonjour".encode()
    allowed = {trie.bytes[i] for i in np.flatnonzero(keep)}
    assert allowed and all(rest.startswith(b) for b in allowed), allowed  # 11 bytes: no close
    with pytest.raises(ValueError, match="not allowed"):
        c.advance(tokenizer.token_to_id("x"))
    with pytest.raises(ValueError, match="special token"):
        c.advance(int(trie.special[0]))


def test_outside_refs_nothing_is_constrained(tokenizer, trie):
    c = QuoteConstraint(trie, SOURCES)
    assert c.allowed(1000) is None and c.allowed(1) is None
    for token in tokenizer.encode("Il était <ref", add_special_tokens=False).ids:
        c.advance(token)
    keep = c.allowed(1000)  # half an opening: only its continuation is checked
    assert keep[trie.special].all() and keep.sum() > 0.9 * trie.vocab_size


def test_the_budget_closes_quotes_and_keeps_new_refs_out(tokenizer, trie):
    c = QuoteConstraint(trie, SOURCES)
    for token in tokenizer.encode('<ref name="1">Chaque', add_special_tokens=False).ids:
        c.advance(token)
    assert c.allowed(CLOSE_MARGIN + 1)[trie.bytes.index(b" ")]  # the quote may go on...
    keep = c.allowed(CLOSE_MARGIN)  # ...until only `</ref>` fits: short, but closed
    allowed = {trie.bytes[i] for i in np.flatnonzero(keep)}
    assert b"<" in allowed and all(b"</ref>".startswith(b) or b.startswith(b"</ref>")
                                   for b in allowed), allowed
    # a quote cut inside a character closes after it, never between its bytes
    c = QuoteConstraint(trie, SOURCES)
    for c_byte in b'<ref name="1">Chaque matin, elle p' + "é".encode()[:1]:
        c.state = c.machine.step(c.state, c_byte)
    allowed = {trie.bytes[i] for i in np.flatnonzero(c.allowed(CLOSE_MARGIN))}
    assert b"\xa9" in allowed and all(b[:1] == b"\xa9" and b"</ref>".startswith(b[1:])
                                      for b in allowed), allowed
    # near the end, `<ref name="` cannot be completed: the ref could not be closed in time
    c = QuoteConstraint(trie, SOURCES)
    for token in tokenizer.encode("Selon <ref name=", add_special_tokens=False).ids:
        c.advance(token)
    quote_token = tokenizer.encode('"', add_special_tokens=False).ids[0]
    assert c.allowed(c.open_margin + 1)[quote_token] and not c.allowed(c.open_margin)[quote_token]


# --- the walk against brute force, and random answers --------------------------------------------

def test_allowed_tokens_are_exactly_the_brute_force_ones(tokenizer, trie):
    rng = random.Random(1)
    checked, kinds = 0, set()
    for _ in range(25):
        _, n, k = random_walk(QuoteConstraint(trie, SOURCES), tokenizer, rng, budget=60,
                              check_every=2)
        checked, kinds = checked + n, kinds | k
    assert checked == 750 and kinds == {"free", "name", "gt", "quote", "closing"}


def test_any_path_through_allowed_tokens_quotes_verbatim(tokenizer, trie):
    rng = random.Random(2)
    quotes = 0
    for budget in [*range(3, 40), *[80] * 40]:  # short budgets: the forced close at work
        c = QuoteConstraint(trie, SOURCES)
        text, _, _ = random_walk(c, tokenizer, rng, budget)
        check = check_citations(text, SOURCES)
        assert not c.in_ref and text.count('<ref name="') == check.quotes, text
        assert check.verbatim == check.quotes and not check.unknown, text
        quotes += check.quotes
    assert quotes > 60


@pytest.mark.slow
def test_smollm2_vocabulary(smollm2_dir):
    """The same checks on a real 49k-token byte-level vocabulary (SmolLM2's)."""
    tokenizer = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    trie = TokenTrie.from_tokenizer(tokenizer)
    assert trie.vocab_size == 49152
    rng = random.Random(3)
    checked = quotes = 0
    for _ in range(8):
        c = QuoteConstraint(trie, SOURCES)
        text, n, _ = random_walk(c, tokenizer, rng, budget=50, check_every=5)
        check = check_citations(text, SOURCES)
        assert not c.in_ref and check.verbatim == check.quotes, text
        checked, quotes = checked + n, quotes + check.quotes
    assert checked == 80 and quotes >= 5
