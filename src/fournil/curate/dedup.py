"""Exact deduplication on normalised text: the first occurrence wins, later ones point to it.

Digests are computed where the text is (in the curation tasks, in parallel); the driver
sees only the 16-byte digests, in input order.
"""

from __future__ import annotations

import hashlib

from fournil.curate.normalize import dedup_key


def exact_digest(text: str) -> bytes:
    """The fingerprint exact dedup compares: equal for texts that differ in case or spacing."""
    return hashlib.blake2b(dedup_key(text).encode(), digest_size=16).digest()


class ExactDedup:
    def __init__(self) -> None:
        self._first: dict[bytes, str] = {}  # digest -> id of the kept document

    def check(self, doc_id: str, digest: bytes) -> str | None:
        """None if `digest` is new (and remember it), else the id of the document it repeats."""
        first = self._first.get(digest)
        if first is None:
            self._first[digest] = doc_id
        return first
