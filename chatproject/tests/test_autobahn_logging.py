"""autobahn's debug-log arguments are made lazy (chatproject.autobahn_logging)."""

import pprint

from autobahn import util
from autobahn.twisted import websocket
from autobahn.websocket import protocol

from chatproject import autobahn_logging


class Counted:
    def __init__(self) -> None:
        self.formatted = 0

    def __format__(self, spec: str) -> str:
        self.formatted += 1
        return "value"


def test_the_log_arguments_are_made_only_when_formatted():
    autobahn_logging.install()
    autobahn_logging.install()  # twice is once
    for module in (protocol, websocket):
        value = Counted()
        lazy = module.hlval(value)
        assert value.formatted == 0
        assert str(lazy) == util.hlval("value") and value.formatted == 1


def test_what_is_formatted_is_what_autobahn_would_have_written():
    autobahn_logging.install()
    assert str(protocol.hltype(test_what_is_formatted_is_what_autobahn_would_have_written)) == util.hltype(
        test_what_is_formatted_is_what_autobahn_would_have_written
    )
    assert str(websocket.hlval("peer")) == util.hlval("peer")
    config = {"a": list(range(30))}
    assert str(protocol.pformat(config)) == pprint.pformat(config)
