"""autobahn (daphne's WebSocket implementation) pretty-prints its whole configuration
for a debug log line on every new connection, whether or not debug logging is on: a
`pprint.pformat` of some forty settings, about a twelfth of the server's CPU per
connection (py-spy, `make bench` idle phase). Here its `pformat` becomes lazy: the
text is made only if a log observer actually formats the event.

Installed by `chatproject.asgi` when daphne serves the application.
"""

from __future__ import annotations

import pprint
from typing import Any


class LazyPformat:
    """`pprint.pformat(obj)`, computed when the log message is formatted."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return pprint.pformat(self.obj)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def install() -> None:
    try:
        from autobahn.websocket import protocol
    except ImportError:  # not served by daphne
        return
    if protocol.pformat is LazyPformat:
        return
    protocol.pformat = LazyPformat
    # The one use of `pformat` that must return a real string.
    protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)
