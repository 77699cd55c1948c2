"""Quotes verbatim by construction: while the model writes `<ref name="N">…</ref>`, only the
tokens that keep the quote a span of source N are allowed.

`fournil.formats.citations.is_verbatim` compares whitespace-squashed text, so a source is
read as the UTF-8 bytes of `" " + squash(text)`; the leading space lets a quote start with a
space-prefixed token (`ĠLe`) at the source's first word too. Three pieces:

- a suffix automaton per source: its states are the substrings of the source (grouped by
  where they end), one dict lookup per byte, ~2 states per byte, ~1 ms per 600-character
  passage to build;
- a byte-level machine over the whole answer, `free` → `<ref name="` → an id → `">` →
  quote → `</ref>` → `free`, whose quote state is a suffix automaton state;
- a walk of the token trie (`fournil.formats.token_trie`) in lockstep with the machine, which
  gives the allowed tokens (~400 trie nodes at a quote's first token, a handful mid-word):
  0.17 ms of CPU per generated token with SmolLM2's 49k tokens, against ~100 ms for its
  forward pass (bench/ask_bench.py).

The rules, each found necessary by running SmolLM2-135M with the constraint on:

- only the ids of the sources can be cited, and a quote starts at a word of the source (after
  one of its spaces); one space right after `">` is layout;
- spaces are the source's own: no runs of spaces, no line break or tab (squashing would make
  sixty tabs "verbatim", and the model wrote them);
- a quote holds no `<`: `<` starts `</ref>`, allowed once the quote has `min_quote` bytes and
  ends at a word's end (no `<ref name="1">D</ref>`), or wherever the source ends or has a `<`
  (else a short quote that reached it would be a dead end);
- the budget: with `remaining` tokens left, no new ref may open when it could not be closed
  in time, and an open quote is closed (at a UTF-8 character's end) when only the tokens
  `</ref>` needs are left; end-of-turn and other special tokens are never allowed inside a
  ref. So a generation never stops with a quote open.

Outside a ref nothing is constrained (`allowed` returns None and costs nothing).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fournil.formats.citations import squash
from fournil.formats.token_trie import TokenTrie

OPEN = b'<ref name="'
CLOSE = b"</ref>"
MIN_QUOTE_BYTES = 12
_LT, _GT, _DQUOTE, _SPACE = b"<>\" "
# What an open quote may still need once it must close, one byte per token at worst: the rest
# of a UTF-8 character (or a whole first one: 4 bytes) and `</ref>`.
CLOSE_MARGIN = 4 + len(CLOSE)

# Machine states are tuples (cheap to make in the trie walk), their first item the kind:
#   (FREE, k)                  k bytes of `<ref name="` seen
#   (NAME, written)            the id's bytes so far
#   (GT, sid)                  the id and its `"` are written, `>` comes next
#   (QUOTE, sid, st, n, lead, space, pending)
#                              st: the suffix automaton state of " " + the quote; n: quote
#                              bytes so far (capped at min_quote); lead: nothing written yet
#                              (one layout space allowed); space: the last byte was a space;
#                              pending: continuation bytes the last UTF-8 character still needs
#   (CLOSING, sid, k)          k bytes of `</ref>` written
FREE, NAME, GT, QUOTE, CLOSING = "free", "name", "gt", "quote", "closing"
START = (FREE, 0)


def is_word_byte(c: int) -> bool:
    """Letters, digits and every byte of a multi-byte UTF-8 character (accented letters)."""
    return c >= 0x80 or chr(c).isalnum()


class SuffixAutomaton:
    """Recognises exactly the substrings of `data`; state 0 is the empty string. Per state:
    `ends_word`, some occurrence ends before a non-word byte or the end (a quote may stop
    there without cutting a word); `ends_hard`, some occurrence ends before a `<` or the end
    (a quote may only stop there, whatever its length)."""

    def __init__(self, data: bytes) -> None:
        nxt: list[dict[int, int]] = [{}]
        link, length, last = [-1], [0], 0
        for c in data:  # the classic online construction
            cur = len(nxt)
            nxt.append({})
            length.append(length[last] + 1)
            link.append(0)
            p = last
            while p != -1 and c not in nxt[p]:
                nxt[p][c] = cur
                p = link[p]
            if p != -1:
                q = nxt[p][c]
                if length[p] + 1 == length[q]:
                    link[cur] = q
                else:
                    clone = len(nxt)
                    nxt.append(dict(nxt[q]))
                    length.append(length[p] + 1)
                    link.append(link[q])
                    while p != -1 and nxt[p].get(c) == q:
                        nxt[p][c] = clone
                        p = link[p]
                    link[q] = link[cur] = clone
            last = cur
        self.next = nxt
        # Each prefix's state holds the end position of that prefix; a suffix link's state
        # holds every end position of the states linking to it: propagate, longest first.
        ends_word, ends_hard = [False] * len(nxt), [False] * len(nxt)
        state = 0
        for i, c in enumerate(data):
            state = nxt[state][c]
            after = data[i + 1] if i + 1 < len(data) else None
            ends_word[state] = after is None or not is_word_byte(after)
            ends_hard[state] = after is None or after == _LT
        for v in sorted(range(1, len(nxt)), key=length.__getitem__, reverse=True):
            if link[v] > 0:
                ends_word[link[v]] |= ends_word[v]
                ends_hard[link[v]] |= ends_hard[v]
        self.ends_word, self.ends_hard = ends_word, ends_hard


class RefMachine:
    """The byte-level machine over an answer citing `sources` (id -> text). `step(state,
    byte)` is the next state or None (the byte is not allowed); `candidates(state)` the bytes
    worth trying (a superset of those `step` accepts). `force_close` and `no_new_refs` are the
    budget rules, set by `QuoteConstraint.allowed`."""

    def __init__(self, sources: Mapping[str, str], min_quote: int = MIN_QUOTE_BYTES) -> None:
        self.min_quote = min_quote
        self.sam: dict[bytes, SuffixAutomaton] = {}
        for sid, text in sources.items():
            if not sid or any(c in sid for c in '"<>'):
                raise ValueError(f"source id {sid!r} cannot be cited as <ref name=\"…\">")
            if squash(text):  # an empty source has nothing to quote: it cannot be cited
                self.sam[sid.encode()] = SuffixAutomaton((" " + squash(text)).encode())
        # the bytes that may follow each prefix of an id (b'"' once it is a whole id)
        self.id_next: dict[bytes, set[int]] = {}
        for sid in self.sam:
            for i in range(len(sid)):
                self.id_next.setdefault(sid[:i], set()).add(sid[i])
            self.id_next.setdefault(sid, set()).add(_DQUOTE)
        self.longest_id = max((len(sid) for sid in self.sam), default=0)
        self.force_close = False
        self.no_new_refs = False

    def step(self, s: tuple, c: int) -> tuple | None:
        kind = s[0]
        if kind == QUOTE:
            _, sid, st, n, lead, space, pending = s
            sam = self.sam[sid]
            if c == _LT:  # only ever the start of `</ref>`
                if n and not pending and (self.force_close or sam.ends_hard[st] or (
                        n >= self.min_quote and (space or sam.ends_word[st]))):
                    return (CLOSING, sid, 1)
                return None
            if c == _SPACE and lead:  # layout, not quoted: the state already holds a space
                return None if self.force_close else (QUOTE, sid, st, n, False, True, 0)
            if self.force_close and n and not pending:  # nothing but `</ref>` now
                return None
            st = sam.next[st].get(c)
            if st is None:
                return None
            pending = (pending - 1 if 0x80 <= c < 0xC0 else
                       (c >= 0xC0) + (c >= 0xE0) + (c >= 0xF0))
            return (QUOTE, sid, st, min(n + 1, self.min_quote), False, c == _SPACE,
                    max(pending, 0))
        if kind == FREE:
            k = s[1]
            if c == OPEN[k]:
                if k + 1 < len(OPEN):
                    return (FREE, k + 1)
                return None if self.no_new_refs else (NAME, b"")
            return (FREE, 1) if c == _LT else START  # '<' only opens, so this is KMP's fallback
        if kind == CLOSING:
            _, sid, k = s
            if c != CLOSE[k]:
                return None
            return START if k + 1 == len(CLOSE) else (CLOSING, sid, k + 1)
        if kind == NAME:
            written = s[1]
            if c not in self.id_next.get(written, ()):
                return None
            return (GT, written) if c == _DQUOTE else (NAME, written + bytes((c,)))
        if kind == GT:  # the quote starts after a space of the source: at a word
            sid = s[1]
            return (QUOTE, sid, self.sam[sid].next[0][_SPACE], 0, True, True, 0) \
                if c == _GT else None
        raise ValueError(f"not a state: {s!r}")

    def candidates(self, s: tuple) -> list[int]:
        kind = s[0]
        if kind == QUOTE:
            _, sid, st, n, lead, _, pending = s
            if self.force_close and n and not pending:
                return [_LT]
            out = [c for c in self.sam[sid].next[st] if c != _LT]
            if lead:
                out.append(_SPACE)
            return [*out, _LT] if n and not pending else out
        if kind == CLOSING:
            return [CLOSE[s[2]]]
        if kind == NAME:
            return sorted(self.id_next.get(s[1], ()))
        if kind == GT:
            return [_GT]
        return [OPEN[s[1]]]


class QuoteConstraint:
    """The constraint of one generation citing `sources` (id -> text), for
    `fournil.model.generate`'s `constraint=`: `allowed(remaining)` before each token (a bool
    vector over the vocabulary, or None when anything goes), `advance(token)` after it.
    `trie` is built once per tokenizer and shared; a constraint is cheap (one suffix
    automaton per source) and holds no model state."""

    def __init__(self, trie: TokenTrie, sources: Mapping[str, str],
                 min_quote: int = MIN_QUOTE_BYTES) -> None:
        if any(OPEN in key for key in trie.keys):
            raise ValueError(f"a token holds the whole {OPEN!r}: the walk outside refs, which "
                             "assumes none does, would be wrong for this tokenizer")
        self.trie = trie
        self.machine = RefMachine(sources, min_quote)
        self.state: tuple = START
        # a new ref must leave room for its id, `">` and a forced close
        self.open_margin = self.machine.longest_id + 2 + CLOSE_MARGIN
        self.visited = 0  # trie nodes the last `allowed` walked (what it cost)

    @property
    def in_ref(self) -> bool:
        """Inside `<ref name="…">…</ref>` (from its id to its closing `>`)."""
        return self.state[0] != FREE

    def advance(self, token: int) -> None:
        """Follows the token generation chose; a token the constraint forbids is a ValueError
        (special tokens stand for no text, as the decoder skips them)."""
        b = self.trie.bytes[token] if 0 <= token < self.trie.vocab_size else None
        if b is None:
            if self.in_ref:
                raise ValueError(f"special token {token} inside a quote")
            return
        s = self.state
        for c in b:
            s = self.machine.step(s, c)
            if s is None:
                raise ValueError(f"token {token} ({b!r}) is not allowed in state {self.state}")
        self.state = s

    def allowed(self, remaining: int | None = None) -> np.ndarray | None:
        """Which tokens may come next: a bool vector over the tokenizer's vocabulary, or None
        when any may. `remaining`, the tokens generation may still produce (this one
        included), turns on the budget rules."""
        m = self.machine
        m.force_close = remaining is not None and remaining <= CLOSE_MARGIN
        m.no_new_refs = remaining is not None and remaining <= self.open_margin
        if self.state == START:  # no token holds a whole `<ref name="` (checked at init)
            return None
        keep = self._keep()
        if not keep.any() and not m.force_close:
            # a vocabulary without a token for some byte: close the quote rather than stall
            m.force_close = True
            keep = self._keep()
        if not keep.any():
            raise RuntimeError(f"no token of this vocabulary is allowed in state {self.state}")
        return keep

    def _keep(self) -> np.ndarray:
        ids, ranges = self._walk()
        keep = np.zeros(self.trie.vocab_size, dtype=bool)
        keep[ids] = True
        for lo, hi in ranges:
            keep[self.trie.ids[lo:hi]] = True
        if not self.in_ref:  # end of turn and the like: never inside a ref
            keep[self.trie.special] = True
        return keep

    def _walk(self) -> tuple[list[int], list[tuple[int, int]]]:
        """The allowed tokens, as ids and as ranges of the trie's order: a depth-first walk of
        the trie that follows the machine byte by byte and prunes a subtree at the first byte
        the machine refuses."""
        trie, m = self.trie, self.machine
        keys, id_list = trie.keys, trie.id_list
        ids: list[int] = []
        ranges: list[tuple[int, int]] = []
        visited = 0

        def visit(lo: int, hi: int, depth: int, prefix: bytes, s: tuple) -> None:
            nonlocal visited
            visited += 1
            while lo < hi and len(keys[lo]) == depth:  # tokens that end at this node
                ids.append(id_list[lo])
                lo += 1
            if lo >= hi:
                return
            if s[0] == FREE:
                # Any byte but the one that goes on with `<ref name="` leads back to free
                # text, and no token holds the whole opening: those subtrees are allowed whole.
                if s[1] == 0:
                    ranges.append((lo, hi))
                    return
                c = OPEN[s[1]]
                a, b = trie.child(lo, hi, prefix, c)
                ranges.extend(((lo, a), (b, hi)))
                s2 = m.step(s, c)
                if a < b and s2 is not None:
                    visit(a, b, depth + 1, prefix + bytes((c,)), s2)
                return
            for c in m.candidates(s):
                s2 = m.step(s, c)
                if s2 is not None:
                    a, b = trie.child(lo, hi, prefix, c)
                    if a < b:
                        visit(a, b, depth + 1, prefix + bytes((c,)), s2)

        visit(0, len(keys), 0, b"", self.state)
        self.visited = visited
        return ids, ranges
