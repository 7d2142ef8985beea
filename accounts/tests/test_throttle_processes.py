"""The login and registration throttles are counted in Redis, so that every server
process counts together, and the login page, the admin's login page and the token
endpoint count as one, as do the registration page and endpoint."""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from accounts.models import User
from accounts.tests.factories import PASSWORD
from tests.procs import DaphneServer, Process, require_stack, wait_healthy

pytestmark = [pytest.mark.stack, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LOGINS = 6
REGISTRATIONS = 4


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker) -> Iterator[tuple[DaphneServer, DaphneServer]]:
    """Two daphne processes on the test database and Redis. Each test starts with
    empty counters (the Redis database is flushed before every test)."""
    require_stack()
    rates = f"login={LOGINS}/min,register={REGISTRATIONS}/hour"
    pair = (DaphneServer(THROTTLE_RATES=rates), DaphneServer(THROTTLE_RATES=rates))
    try:
        # Both start at once: a fresh process takes long to import everything.
        for server in pair:
            Process.start(server)
        deadline = time.monotonic() + 120
        for server in pair:
            wait_healthy(server, server.url, deadline)
        yield pair
    finally:
        for server in pair:
            server.stop()


def _open(opener: urllib.request.OpenerDirector, request: urllib.request.Request) -> tuple[int, dict, str]:
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _api(base_url: str, path: str, body: dict) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"{base_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    status, headers, _ = _open(urllib.request.build_opener(), request)
    return status, headers


def _api_login(base_url: str, password: str = "wrong") -> tuple[int, dict[str, str]]:
    return _api(base_url, "/api/auth/token/", {"username": "alice", "password": password})


class Browser:
    """Forms as a browser submits them: the CSRF cookie and token from the page, no
    redirects followed. The cookie serves every server: cookies ignore the port."""

    def __init__(self) -> None:
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect)

    def get(self, url: str) -> tuple[int, str]:
        status, _, body = _open(self.opener, urllib.request.Request(url))
        return status, body

    def submit(self, url: str, fields: dict[str, str]) -> tuple[int, dict, str]:
        status, page = self.get(url)
        assert status == 200, page
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        return _open(self.opener, urllib.request.Request(url, data=data, method="POST"))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _page_login(browser: Browser, base_url: str, password: str = "wrong") -> tuple[int, dict, str]:
    return browser.submit(f"{base_url}/accounts/login/", {"username": "alice", "password": password})


def _admin_login(browser: Browser, base_url: str, password: str = "wrong") -> tuple[int, dict, str]:
    return browser.submit(f"{base_url}/admin/login/?next=/admin/", {"username": "alice", "password": password})


def test_login_throttle_is_shared_by_two_server_processes(servers, alice):
    a, b = servers
    statuses = [_api_login(server.url)[0] for server in (a, b) * (LOGINS // 2)]
    assert statuses == [401] * LOGINS
    for server in (a, b):
        status, headers = _api_login(server.url)
        assert status == 429
        assert int(headers["Retry-After"]) > 0


def test_login_page_and_admin_login_are_throttled_across_server_processes_with_the_api(servers, alice):
    a, b = servers
    browser = Browser()
    attempts = [
        lambda: _page_login(browser, a.url)[0],
        lambda: _admin_login(browser, b.url)[0],
        lambda: _api_login(a.url)[0],
        lambda: _page_login(browser, b.url)[0],
        lambda: _admin_login(browser, a.url)[0],
        lambda: _api_login(b.url)[0],
    ]
    assert [attempt() for attempt in attempts] == [200, 200, 401, 200, 200, 401]

    # Every way in, on either process, is now refused, even with the right password;
    # the forms come back with the message and what was typed.
    for submit, server in ((_page_login, b), (_admin_login, a), (_page_login, a), (_admin_login, b)):
        status, headers, page = submit(browser, server.url, PASSWORD)
        assert status == 429, page
        seconds = int(headers["Retry-After"])
        assert 0 < seconds <= 60
        assert f"Too many attempts, try again in {seconds} second" in page
        assert 'value="alice"' in page
    assert _api_login(a.url, PASSWORD)[0] == 429
    # Nobody was logged in, and showing the forms is never refused.
    assert not any(cookie.name == "sessionid" for cookie in browser.cookies)
    assert browser.get(f"{a.url}/accounts/login/")[0] == 200
    assert browser.get(f"{b.url}/admin/login/")[0] == 200


def test_registration_page_is_throttled_across_server_processes_with_the_api(servers):
    a, b = servers
    browser = Browser()

    def page_register(server: DaphneServer, username: str, password2: str = "mismatch") -> tuple[int, dict, str]:
        fields = {"username": username, "email": "", "password1": PASSWORD, "password2": password2}
        return browser.submit(f"{server.url}/accounts/register/", fields)

    def api_register(server: DaphneServer, username: str) -> int:
        return _api(server.url, "/api/auth/register/", {"username": username, "password": PASSWORD})[0]

    assert page_register(a, "flood0")[0] == 200  # the passwords differ
    assert api_register(b, "flood1") == 201
    assert page_register(b, "flood2")[0] == 200
    assert api_register(a, "flood3") == 201

    status, headers, page = page_register(a, "flood4", password2=PASSWORD)
    assert status == 429
    assert int(headers["Retry-After"]) > 0
    assert "Too many attempts, try again in" in page and 'value="flood4"' in page
    assert page_register(b, "flood5", password2=PASSWORD)[0] == 429
    assert api_register(b, "flood6") == 429
    assert sorted(User.objects.values_list("username", flat=True)) == ["flood1", "flood3"]
