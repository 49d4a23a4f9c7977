"""Connection deadlines the HTTP server lacks on its own.

uvicorn closes a keep-alive connection that stays idle after a response, but a connection that
opens and sends nothing, or sends its request head a byte at a time, is kept forever: enough of
them exhaust the server. :func:`timed_protocol` arms a deadline when a connection opens and after
each response: unless a complete request head has arrived by then, the connection is closed.
(Slow bodies are the request handler's: request.read_body answers 408.)
"""

from __future__ import annotations

import asyncio

__all__ = ["timed_protocol"]


def timed_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (httptools, else h11) with the request-head deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: type = AutoHTTPProtocol

    class TimedHTTPProtocol(base):  # type: ignore[misc, valid-type]
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # noqa: ANN001
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._head_deadline = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _expire(self) -> None:
            self._head_deadline = None
            # No request in progress: no head has completed since the deadline was armed.
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

    return TimedHTTPProtocol
