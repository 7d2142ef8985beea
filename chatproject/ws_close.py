"""WebSocket close codes under daphne: a frame over 64 KiB closes the connection with
1009 (message too big), as the contract says, whichever side finds it too big.

autobahn (daphne's WebSocket implementation) lets an application close only with 1000
or 3000-4999: the consumer's `close(code=1009)` raised there, and daphne closed with
1011 instead. And a frame beyond daphne's own `--websocket-max-message-size` made
autobahn drop the TCP connection without a close frame (`failByDrop`), which the
client sees as 1006. Here daphne's protocol sends the close codes RFC 6455 lets an
endpoint send, and autobahn answers a frame it refuses with a close frame (1009 for
one too big) rather than a dropped connection.

Installed by `chatproject.asgi` when daphne serves the application.
"""

from __future__ import annotations

# RFC 6455, 7.4.1: the codes an endpoint may send besides 1000 (1004-1006 and 1015
# are reserved for reporting, never sent).
SENDABLE_PROTOCOL_CODES = frozenset({1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})


def install() -> None:
    try:
        from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    except ImportError:  # not served by daphne
        return
    if getattr(WebSocketProtocol, "_protocol_close_codes", False):
        return
    original_close = WebSocketProtocol.serverClose
    original_init = WebSocketFactory.__init__

    def server_close(self, code=None):
        if code in SENDABLE_PROTOCOL_CODES:
            # What autobahn's sendClose() does, without its check of the code.
            self.sendCloseFrame(code=code, isReply=False)
            return
        original_close(self, code)

    def factory_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        # daphne sets its own options after this (sizes, timeouts): not this one.
        self.setProtocolOptions(failByDrop=False)

    WebSocketProtocol.serverClose = server_close
    WebSocketFactory.__init__ = factory_init
    WebSocketProtocol._protocol_close_codes = True
