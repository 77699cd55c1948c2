"""A tokenizer's vocabulary as byte strings, sorted so that it can be walked as a trie.

Constrained decoding asks, at every step, "which tokens keep the text valid?". Answering it
token by token costs the whole vocabulary (49k for SmolLM2) per step; walking the vocabulary
as a trie of bytes, in lockstep with the machine that checks the text, prunes a whole subtree
at the first byte that fails. The trie is the sorted list of the tokens' bytes: a node is a
range `[lo, hi)` of that order whose keys share a prefix, and a child is two bisections, so
there is no object per node and building it is one sort (~0.2 s for 49k tokens, once per
model).

Working on bytes rather than text makes tokens that end inside a UTF-8 character (byte-level
BPE has them) an ordinary case.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence

import numpy as np
from tokenizers import Tokenizer

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece's byte fallback
# A text whose bytes must come back from decoding the tokens of its encoding: accents, a
# ligature, a character of 4 bytes, punctuation, markup, several spaces and a line break.
ROUND_TRIP_PROBE = "D'après la « source 2 » : <ref name=\"2\">l'œuvre — 4,5 €</ref>  🍞\nFin."


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: the character a byte-level BPE vocabulary writes
    for each byte, mapped back to the byte (printable bytes stand for themselves, the others
    are shifted past 255)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shifted)
            shifted += 1
    return {c: b for b, c in chars.items()}


_BYTE_OF_CHAR = _byte_level_alphabet()


def token_bytes(tokenizer: Tokenizer) -> list[bytes | None]:
    """The raw bytes each token id stands for; None for special tokens (end of turn, ...),
    which decode to nothing. Byte-level BPE (fournil's tokenizers, SmolLM2, Qwen, Llama 3)
    and SentencePiece-style vocabularies (`▁` for a space, `<0xNN>` byte fallback) are read;
    a ValueError names a tokenizer whose decoded text is not the concatenation of its tokens'
    bytes, since every constraint built on these bytes would then be wrong."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    byte_level = "ByteLevel" in str(tokenizer.decoder)
    out: list[bytes | None] = [None] * (max(vocab.values()) + 1)
    for piece, i in vocab.items():
        if i in special:
            continue
        if byte_level:
            try:
                out[i] = bytes(_BYTE_OF_CHAR[c] for c in piece)
            except KeyError:  # an added (non-special) token is stored as plain text
                out[i] = piece.encode()
        elif m := _BYTE_TOKEN.match(piece):
            out[i] = bytes([int(m.group(1), 16)])
        else:
            out[i] = piece.replace("▁", " ").encode()
    return checked_token_bytes(out, tokenizer.encode(ROUND_TRIP_PROBE,
                                                     add_special_tokens=False).ids,
                               tokenizer.decode, f"decoder {tokenizer.decoder}")


def checked_token_bytes(tbytes: list[bytes | None], probe_ids: Sequence[int],
                        decode: Callable[[list[int]], str], what: str
                        ) -> list[bytes | None]:
    """`tbytes` once the tokens of a probe text (`probe_ids`, its encoding) are seen to decode
    to the concatenation of their bytes; a ValueError naming `what` otherwise, since every
    constraint built on these bytes would then be wrong."""
    ids = list(probe_ids)
    joined = b"".join(tbytes[i] or b"" for i in ids).decode("utf-8", "replace")
    # SentencePiece decoders drop the space they put before a text's first word
    if decode(ids) not in (joined, joined.removeprefix(" ")):
        raise ValueError(f"this tokenizer's tokens cannot be read as bytes ({what}): "
                         f"{joined!r} from the tokens' bytes, {decode(ids)!r} decoded")
    return tbytes


class TokenTrie:
    """The non-special tokens' bytes in sorted order (`keys`, and `ids`, the token id of each
    key); `child` walks it as a trie. `bytes[i]` is token i's bytes (None if special)."""

    def __init__(self, tbytes: Sequence[bytes | None]) -> None:
        pairs = sorted((b, i) for i, b in enumerate(tbytes) if b)
        self.keys: list[bytes] = [b for b, _ in pairs]
        self.ids = np.array([i for _, i in pairs], dtype=np.int64)
        self.id_list: list[int] = self.ids.tolist()
        self.bytes = list(tbytes)
        self.special = np.array([i for i, b in enumerate(tbytes) if b is None], dtype=np.int64)
        self.vocab_size = len(tbytes)
        self._longest = max((len(k) for k in self.keys), default=0)

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> TokenTrie:
        return cls(token_bytes(tokenizer))

    def child(self, lo: int, hi: int, prefix: bytes, byte: int) -> tuple[int, int]:
        """The range of keys in [lo, hi) (all starting with `prefix`) that go on with `byte`;
        empty (a == b) when none does."""
        key = prefix + bytes((byte,))
        a = bisect.bisect_left(self.keys, key, lo, hi)
        if a == hi or not self.keys[a].startswith(key):
            return a, a
        # every extension of `key` sorts before key + b"\xff" * (longest key): past them all
        b = bisect.bisect_left(self.keys, key + b"\xff" * self._longest, a, hi)
        return a, b
