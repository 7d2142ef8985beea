"""The login throttle is counted in Redis, so that every server process counts together."""

import json
import urllib.error
import urllib.request

import pytest

from tests.procs import DaphneServer, require_stack, running

pytestmark = [pytest.mark.stack, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _login(base_url: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"{base_url}/api/auth/token/",
        data=json.dumps({"username": "alice", "password": "wrong"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_login_throttle_is_shared_by_two_server_processes(alice):
    require_stack()
    with running(DaphneServer(THROTTLE_RATES="login=6/min"), DaphneServer(THROTTLE_RATES="login=6/min")) as (a, b):
        statuses = [_login(server.url)[0] for server in (a, b) * 3]
        assert statuses == [401] * 6
        for server in (a, b):
            status, headers = _login(server.url)
            assert status == 429
            assert int(headers["Retry-After"]) > 0
