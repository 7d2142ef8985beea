"""The servers under test, started as real processes like the end-to-end tests do
(`tests.procs`), against the benchmark's own database and the configured Redis.

Import this only after Django is set up with the benchmark's database:
`tests.procs.process_env` reads the database and secret from the live settings.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from tests.procs import BIN, DaphneServer, Process, free_port, process_env, wait_healthy

PROJECT = "project"
CHANNELS_RELAY = "channels-relay"
WS_RELAY = "ws-relay"
SYSTEMS = (PROJECT, CHANNELS_RELAY, WS_RELAY)

_ASGI_APPS = {
    PROJECT: "chatproject.asgi:application",
    CHANNELS_RELAY: "bench.relay_asgi:application",
}


class BenchDaphne(DaphneServer):
    """`tests.procs.DaphneServer` serving either the project or the Channels relay."""

    def __init__(self, system: str, env: dict[str, str]) -> None:
        super().__init__(**env)
        self.args[-1] = _ASGI_APPS[system]
        self.system = system
        self.log_path = self.log_path.with_name(f"bench-{system}-{self.port}.log")


class WebsocketsRelay(Process):
    """The bare `websockets` relay (`bench/ws_relay.py`) on a port of its own."""

    def __init__(self, env: dict[str, str], relay_table: str) -> None:
        self.port = free_port()
        self.system = WS_RELAY
        super().__init__(
            [str(BIN / "python"), "-m", "bench.ws_relay", "--port", str(self.port), "--table", relay_table],
            process_env(**env),
            f"bench-{WS_RELAY}-{self.port}",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"


def make_server(system: str, env: dict[str, str], relay_table: str) -> BenchDaphne | WebsocketsRelay:
    if system == WS_RELAY:
        return WebsocketsRelay(env, relay_table)
    return BenchDaphne(system, env)


@contextlib.contextmanager
def running_together(servers: list[BenchDaphne | WebsocketsRelay], timeout: float = 90) -> Iterator[None]:
    """Start the processes at once (Django's start-up is most of the wait), wait until
    each answers /healthz, stop them all afterwards."""
    try:
        for server in servers:
            Process.start(server)
        deadline = time.monotonic() + timeout
        for server in servers:
            wait_healthy(server, server.url, deadline)
        yield
    finally:
        for server in reversed(servers):
            server.stop()
