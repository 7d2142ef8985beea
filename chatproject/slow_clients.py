"""A WebSocket client that does not read what it is sent must not make the server
hold it all in memory.

daphne hands each frame to Twisted, which buffers whatever the client's TCP window
does not take, without limit, and the ASGI application cannot see that buffer. So
daphne's WebSocket protocol is wrapped here: once more than
`WS_SEND_BUFFER_LIMIT_BYTES` wait to be written to one client, that connection is
aborted (its buffer freed at once). The client reconnects and catches up with `sync`
from PostgreSQL, as after any other disconnect.

Installed by `chatproject.asgi` when daphne serves the application.
"""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)


def _buffered_bytes(transport) -> int:
    """Bytes a Twisted TCP transport holds for its peer (0 for other transports)."""
    try:
        pending = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return 0
    return max(0, pending)


def install() -> None:
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # not served by daphne
        return
    if getattr(WebSocketProtocol, "_send_buffer_limited", False):
        return
    original = WebSocketProtocol.serverSend

    def server_send(self, content, binary=False):
        limit = settings.WS_SEND_BUFFER_LIMIT_BYTES
        transport = getattr(self, "transport", None)
        if limit and transport is not None and _buffered_bytes(transport) > limit:
            if not getattr(self, "_aborted_as_slow", False):
                self._aborted_as_slow = True
                logger.warning(
                    "closing %s: more than %d bytes wait to be written to it (it does not read)",
                    getattr(self, "client_addr", "a client"),
                    limit,
                )
                transport.abortConnection()
            return None
        return original(self, content, binary)

    WebSocketProtocol.serverSend = server_send
    WebSocketProtocol._send_buffer_limited = True
