"""The send-buffer limit on daphne's WebSocket protocol (the fault test in
tests/test_faults.py shows it on a real server under a flood)."""

from daphne.ws_protocol import WebSocketProtocol

from chatproject import slow_clients


class FakeTransport:
    def __init__(self, buffered: int) -> None:
        self.dataBuffer = b"x" * buffered
        self.offset = 0
        self._tempDataLen = 0
        self.aborted = 0

    def abortConnection(self) -> None:
        self.aborted += 1


def protocol(buffered: int) -> tuple[WebSocketProtocol, list]:
    slow_clients.install()
    proto = WebSocketProtocol.__new__(WebSocketProtocol)
    proto.state = WebSocketProtocol.STATE_OPEN
    proto.client_addr = ["127.0.0.1", 1]
    proto.transport = FakeTransport(buffered)
    sent: list = []
    proto.sendMessage = lambda payload, binary=False: sent.append(payload)
    return proto, sent


def test_frames_go_out_while_the_client_reads(settings):
    settings.WS_SEND_BUFFER_LIMIT_BYTES = 1000
    proto, sent = protocol(buffered=10)
    proto.serverSend('{"type":"pong"}')
    assert sent == [b'{"type":"pong"}'] and proto.transport.aborted == 0


def test_a_client_with_too_much_waiting_for_it_is_cut_once_and_gets_nothing_more(settings):
    settings.WS_SEND_BUFFER_LIMIT_BYTES = 1000
    proto, sent = protocol(buffered=5000)
    proto.serverSend("one")
    proto.serverSend("two")
    assert sent == [] and proto.transport.aborted == 1


def test_the_limit_can_be_turned_off(settings):
    settings.WS_SEND_BUFFER_LIMIT_BYTES = 0
    proto, sent = protocol(buffered=10**7)
    proto.serverSend("still sent")
    assert sent == [b"still sent"]


def test_installing_twice_wraps_once():
    slow_clients.install()
    wrapped = WebSocketProtocol.serverSend
    slow_clients.install()
    assert WebSocketProtocol.serverSend is wrapped
