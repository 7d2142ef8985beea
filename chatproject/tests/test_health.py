"""`/healthz` of a real server process whose Redis or database is unreachable (a port
nothing listens on): 503, naming what failed, answered in time for a probe; 200 again
once it answers."""

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.faults_support import PrivateRedis
from tests.procs import DaphneServer, Process, free_port, require_stack, wait_healthy

pytestmark = [pytest.mark.stack, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _healthz(server: DaphneServer) -> tuple[int, dict, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=15) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, json.loads(body), time.monotonic() - started


def _first_answer(server: DaphneServer, timeout: float = 30) -> tuple[int, dict, float]:
    """The first `/healthz` answer of a server that is starting."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{server.log_tail()}")
        try:
            return _healthz(server)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_healthz_is_503_while_redis_is_unreachable_and_200_once_it_answers():
    require_stack()
    redis = PrivateRedis()  # its port is chosen; nothing listens there yet
    server = DaphneServer(REDIS_URL=redis.url)
    Process.start(server)  # not DaphneServer.start, which waits for a 200
    try:
        status, body, seconds = _first_answer(server)
        assert (status, body) == (503, {"status": "unavailable", "database": True, "redis": False})
        assert seconds < 5
        redis.start()
        wait_healthy(server, server.url, time.monotonic() + 15)
        status, body, _ = _healthz(server)
        assert (status, body) == (200, {"status": "ok", "database": True, "redis": True})
    finally:
        server.stop()
        redis.stop()


def test_healthz_is_503_while_the_database_is_unreachable():
    require_stack()
    server = DaphneServer(DATABASE_URL=f"postgres://root@127.0.0.1:{free_port()}/chat")
    Process.start(server)
    try:
        status, body, seconds = _first_answer(server)
        assert (status, body) == (503, {"status": "unavailable", "database": False, "redis": True})
        # The pool gives up after its 5 s timeout: within the compose probe's 8 s.
        assert seconds < 8
    finally:
        server.stop()
