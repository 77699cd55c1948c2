"""Compressed streams (.gz, .zst): decompressed bytes, checked whole before they are read, and
split into lines. A damaged stream is found here and reported to the reader as a `StreamError`
with where it broke; the reader keeps what came before (see readers.py)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import zstandard

CHUNK = 1 << 20


class StreamError(Exception):
    """A compressed stream that ends early or does not decode; the reader adds file and line.

    `tail` is what was decompressed of the broken line before the damage.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.tail = b""


def chunks(path: Path) -> Iterator[bytes]:
    """The decompressed bytes of a file, chosen by suffix (.gz, .zst or plain).

    A compressed file is checked whole first (decompressed, output dropped), then read:
    gzip checks a member's CRC, zstd a frame's checksum, only at its end, and corrupt data
    often still inflates, into lines that parse as JSON with the wrong text. So nothing of
    a member that fails is read: the bytes given are those of the members before it, or,
    in a file cut short, all that was there before the cut (no sign of corruption in it).
    Then the damage is raised as a `StreamError`.
    """
    codec = _codec(path)
    if codec is None:
        with open(path, "rb") as f:
            yield from iter(lambda: f.read(CHUNK), b"")
        return
    trusted, damage = _check_stream(path, codec)
    given = 0
    for out, _ in _decompress(path, *codec):
        if given + len(out) >= trusted:
            yield out[: trusted - given]
            break
        yield out
        given += len(out)
    if damage is not None:
        raise damage


_Codec = tuple[Callable[[], object], type[Exception], str, str]


def _codec(path: Path) -> _Codec | None:
    """(new decompressor, its error, kind, the end mark) by suffix; None for a plain file."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return (lambda: zlib.decompressobj(wbits=31), zlib.error, "gzip",
                "the end-of-stream marker")
    if name.endswith(".zst"):
        return (lambda: zstandard.ZstdDecompressor().decompressobj(), zstandard.ZstdError,
                "zstd", "the end of the frame")
    return None


def _check_stream(path: Path, codec: _Codec) -> tuple[int, StreamError | None]:
    """(how many decompressed bytes can be trusted, the damage after them or None)."""
    produced, verified = 0, 0
    try:
        for out, member_ended in _decompress(path, *codec):
            produced += len(out)
            if member_ended:
                verified = produced
    except StreamError as e:
        if e.reason == "ingest:truncated":
            return produced, e
        e.args = (f"{e.args[0]}; the member that starts at byte {verified} of the "
                  "decompressed data cannot be trusted, so none of its lines is read",)
        return verified, e
    return produced, None


def _decompress(path: Path, new: Callable[[], object], error: type[Exception], kind: str,
                marker: str) -> Iterator[tuple[bytes, bool]]:
    """(output, a member ended here): member after member (concatenated .gz members,
    multi-frame .zst).

    Python's gzip module and zstandard's stream reader differ on a truncated file (one
    raises, the other just stops), so both go through the same explicit end-of-stream check.
    """
    with open(path, "rb") as f:
        stream, pending = new(), False
        for chunk in iter(lambda: f.read(CHUNK), b""):
            while chunk:
                pending = True
                try:
                    out = stream.decompress(chunk)
                except error as e:
                    raise StreamError(f"ingest:corrupt_{kind}",
                                       f"corrupt {kind} data ({e})") from None
                if not stream.eof:
                    if out:
                        yield out, False
                    break
                yield out, True
                chunk, stream, pending = stream.unused_data, new(), False
    if pending:
        raise StreamError("ingest:truncated",
                           f"truncated {kind} stream (file ends before {marker})")


def lines_of(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bool]]:
    """(line, ended with a newline), split on b"\n" only: JSON escapes every other line
    break, so nothing else splits. A broken stream's partial line rides on its error."""
    pending: list[bytes] = []
    try:
        for chunk in chunks:
            parts = chunk.split(b"\n")
            if len(parts) == 1:
                pending.append(chunk)
                continue
            yield b"".join([*pending, parts[0]]), True
            for part in parts[1:-1]:
                yield part, True
            pending = [parts[-1]] if parts[-1] else []
    except StreamError as e:
        e.tail = b"".join(pending)
        raise
    if pending:
        yield b"".join(pending), False
