"""uvicorn's HTTP/1.1 protocol (h11) with a deadline on each request's head.

uvicorn bounds a request head's size (h11's incomplete-event limit, 16 KiB: beyond it the
client gets a 400) and closes a kept-alive connection that stays silent after a response
(`timeout_keep_alive`), but nothing bounds the time a head takes to arrive: a connection
that sends nothing, or a head one byte at a time, is held for as long as the client likes,
and enough of them exhaust the server's connections (slowloris). Here a connection must
deliver a complete request head within `head_timeout_s` of opening or of the previous
response's end, or it is closed. The body has its own deadline, in the app
(`fournil.serve.server`), which can answer it with a 408.

The h11 implementation is chosen explicitly (uvicorn picks httptools when it is installed)
so the size limit and this deadline hold whatever else is installed; parsing speed does not
matter next to a model's generation.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0


class HeadDeadlineH11Protocol(H11Protocol):
    """`H11Protocol` that closes a connection whose request head is not complete in time."""

    head_timeout_s: float = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        if not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        # A request whose head arrived is under way (or pipelined behind this response):
        # its body deadline and the generation limits govern it from here.
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and not self.transport.is_closing():
            self.transport.close()


def with_head_timeout(seconds: float) -> type[HeadDeadlineH11Protocol]:
    """The protocol class to give uvicorn (`Config(http=...)`) for a given head deadline."""
    if not seconds > 0:
        raise ValueError(f"head_timeout_s must be > 0, got {seconds}")
    return type("HeadDeadlineH11Protocol", (HeadDeadlineH11Protocol,),
                {"head_timeout_s": float(seconds)})
