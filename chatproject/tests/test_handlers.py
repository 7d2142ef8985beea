"""The HTTP side of the ASGI application (chatproject.handlers)."""

import threading

import pytest
from asgiref.sync import iscoroutinefunction
from asgiref.testing import ApplicationCommunicator
from django.urls import path

from chatproject.asgi import django_asgi_app

pytestmark = pytest.mark.django_db(transaction=True)

seen_threads: list[int] = []


def _view(request):
    from django.http import JsonResponse

    seen_threads.append(threading.get_ident())
    return JsonResponse({"ok": True})


urlpatterns = [path("probe/", _view)]


async def _get(path_: str) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path_,
        "raw_path": path_.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 40000),
        "server": ("localhost", 80),
    }
    communicator = ApplicationCommunicator(django_asgi_app, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    body = await communicator.receive_output(5)
    await communicator.wait(5)
    return start["status"], dict(start["headers"]), body["body"]


def test_the_middleware_chain_is_the_sync_one():
    assert not iscoroutinefunction(django_asgi_app._middleware_chain)


async def test_a_request_runs_its_middleware_and_view_and_gets_the_security_headers(settings):
    settings.ROOT_URLCONF = __name__
    seen_threads.clear()
    status, headers, body = await _get("/probe/")
    assert status == 200 and body == b'{"ok": true}'
    assert headers[b"X-Content-Type-Options"] == b"nosniff"
    assert headers[b"X-Frame-Options"] == b"DENY"
    assert b"Content-Security-Policy" in headers
    assert seen_threads and seen_threads[0] != threading.get_ident()  # the view ran off the event loop


async def test_an_unknown_path_is_a_404_through_the_sync_chain():
    status, _, _ = await _get("/no-such-page/")
    assert status == 404
