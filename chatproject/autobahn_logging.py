"""autobahn (daphne's WebSocket implementation) pretty-prints its whole configuration
for a debug log line on every new connection, whether or not debug logging is on: a
`pprint.pformat` of some forty settings, about a twelfth of the server's CPU per
connection (py-spy, `make bench` idle phase). Here its `pformat` becomes lazy: the
text is made only if a log observer actually formats the event.

The same goes for the `hltype`/`hlval` colouring of the debug line autobahn logs for
every frame sent and every read (a qualified-name lookup and two `click.style` calls
each, about a twentieth of the server's CPU under chat load): lazy too.

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


class LazyCall:
    """`fn(*args)`, computed when the log message is formatted."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __str__(self) -> str:
        return str(self.fn(*self.args))

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _lazy(fn: Any) -> Any:
    def deferred(*args: Any) -> LazyCall:
        return LazyCall(fn, *args)

    deferred.lazy = True
    return deferred


def install() -> None:
    try:
        from autobahn import util
        from autobahn.twisted import websocket
        from autobahn.websocket import protocol
    except ImportError:  # not served by daphne
        return
    if protocol.pformat is LazyPformat:
        return
    protocol.pformat = LazyPformat
    for module in (protocol, websocket):
        for name in ("hltype", "hlval"):
            if not getattr(getattr(module, name), "lazy", False):
                setattr(module, name, _lazy(getattr(util, name)))
    # The one use of `pformat` that must return a real string.
    protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)
