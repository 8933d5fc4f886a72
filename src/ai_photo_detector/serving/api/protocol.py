"""uvicorn's httptools protocol with limits on the request head, which httptools does not
enforce: its size and header count (431 beyond them) and the time it may take to arrive (a
connection that sends no complete head within ``header_timeout_s``, slowloris included, is
answered 408 and closed). Body limits and deadlines are the routes' (``api/body.py``).

Both timers here, the head timer and uvicorn's keep-alive timer, act only when they fire on
time after the sockets were polled past their deadline. Under uvloop a timer that fell due while
the loop was stalled in an I/O callback fires before the sockets are polled again, so a request
that arrived during the stall would be refused or dropped unread, and the client reset
(``reliability/keepalive.py`` reproduces it). A timer that fires late, or for the first time,
looks again ``RECHECK_S`` later, by when the waiting bytes have been read and have cancelled it.

Kept to the protocol's parser callbacks and uvicorn's keep-alive timer handler, which have been
stable across uvicorn releases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # Set from settings by the server before it starts (uvicorn builds one per connection).
    max_header_bytes = 64 * 1024
    max_headers = 100
    header_timeout_s = 10.0
    RECHECK_S = 0.05  # how long a timer that fired late or for the first time waits to look again

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rechecks: dict[str, float] = {}  # timer name -> when its second look is due
        self._in_head = True
        # Head bytes as read (a head still arriving) and as parsed (a head read whole at once).
        self._received, self._parsed = [0], [0]
        self._head_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._heads = 0  # heads completed on this connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a head does not stay for ever

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _on_time(self, name: str, look_again: Callable[[], None]) -> asyncio.TimerHandle | None:
        """None when timer ``name`` may act now: it fired on time for its second look, so the
        sockets were polled since its deadline. Otherwise the handle of its next look."""
        now = self.loop.time()
        second_look = self._rechecks.pop(name, None)
        if second_look is not None and now - second_look <= self.RECHECK_S:
            return None
        self._rechecks[name] = now + self.RECHECK_S
        return self.loop.call_later(self.RECHECK_S, look_again)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._rechecks.pop("head", None)
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = self._on_time("head", self._head_late)
        if self._head_timer is None and self._in_head and not self.transport.is_closing():
            self._refuse(408, "the request head did not arrive in time")

    def on_response_complete(self) -> None:
        self._rechecks.pop("keep_alive", None)  # a fresh keep-alive deadline
        super().on_response_complete()

    def timeout_keep_alive_handler(self) -> None:
        # data_received cancels whatever handle is stored here, the next look's included.
        self.timeout_keep_alive_task = self._on_time("keep_alive", self.timeout_keep_alive_handler)
        if self.timeout_keep_alive_task is None:
            super().timeout_keep_alive_handler()

    def _refuse(self, status: int, message: str) -> None:
        if self._refused:
            return
        self._refused = True
        self._in_head = False
        self._disarm()
        body = message.encode("ascii")
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()

    def _count(self, totals: list[int], size: int) -> None:
        totals[0] += size
        if totals[0] > self.max_header_bytes:
            self._refuse(431, f"the request head exceeds {self.max_header_bytes} bytes")

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        started_in_head, heads_before = self._in_head, self._heads
        if started_in_head:
            self._arm()
        super().data_received(data)
        # All of it was head only if no head was completed in it (a small request arrives
        # whole, head, body and all, in one read and leaves the next head pending).
        if started_in_head and self._heads == heads_before:
            self._count(self._received, len(data))

    # Parser callbacks: the head's parts are counted as they complete, so a head that arrives
    # whole in one read is measured too; once refused, nothing reaches the app.
    def on_url(self, url: bytes) -> None:
        self._count(self._parsed, len(url))
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        if self._head_count > self.max_headers:
            self._refuse(431, f"more than {self.max_headers} request headers")
        self._count(self._parsed, len(name) + len(value) + 4)
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._heads += 1
        self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        # The next bytes on this connection start a new head.
        self._in_head, self._received, self._parsed, self._head_count = True, [0], [0], 0
