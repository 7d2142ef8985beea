"""The HTTP side of the ASGI application (chatproject.handlers)."""

import asyncio
import threading
import time

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_finished, request_started
from django.http import StreamingHttpResponse
from django.urls import path

from chatproject.asgi import django_asgi_app
from chatproject.handlers import HTTP_THREADS

pytestmark = pytest.mark.django_db(transaction=True)

seen_threads: list[int] = []


def _view(request):
    from django.http import JsonResponse

    seen_threads.append(threading.get_ident())
    return JsonResponse({"ok": True})


def _slow_view(request):
    time.sleep(0.3)
    return _view(request)


async def _parts():
    for part in (b"a", b"b"):
        yield part


def _streamed_view(request):
    seen_threads.append(threading.get_ident())
    return StreamingHttpResponse(_parts())


iterated_in: list[int] = []
waited: list[bool] = []


def _waiting_view(request):
    # As a REST send waits for its message to be published (delivery.flush_sync).
    async_to_sync(asyncio.sleep)(0.3)
    waited.append(True)
    return _view(request)


def _sync_parts():
    iterated_in.append(threading.get_ident())
    yield b"x"


def _file_like_view(request):
    # WhiteNoise's file responses are sync iterators like this one.
    return StreamingHttpResponse(_sync_parts())


urlpatterns = [
    path("probe/", _view),
    path("slow/", _slow_view),
    path("streamed/", _streamed_view),
    path("file-like/", _file_like_view),
    path("waiting/", _waiting_view),
]


@pytest.fixture
def events():
    """(signal, thread name) of every request_started and request_finished."""
    seen: list[tuple[str, str]] = []

    def started(**kwargs):
        seen.append(("started", threading.current_thread().name))

    def finished(**kwargs):
        seen.append(("finished", threading.current_thread().name))

    request_started.connect(started)
    request_finished.connect(finished)
    seen_threads.clear()
    yield seen
    request_started.disconnect(started)
    request_finished.disconnect(finished)


def _scope(path_: str) -> dict:
    return {
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


async def _get(path_: str) -> tuple[int, dict[bytes, bytes], bytes]:
    communicator = ApplicationCommunicator(django_asgi_app, _scope(path_))
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


async def test_start_view_and_finish_run_in_one_thread_and_finish_before_the_response_is_sent(settings, events):
    settings.ROOT_URLCONF = __name__
    communicator = ApplicationCommunicator(django_asgi_app, _scope("/probe/"))
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    # request_finished (the database connection back in the pool) came before the send
    seen_before_the_send = list(events)
    await communicator.receive_output(5)
    await communicator.wait(5)
    assert start["status"] == 200
    thread = seen_before_the_send[0][1]
    assert seen_before_the_send == [("started", thread), ("finished", thread)]
    assert thread.startswith("http") and thread != threading.current_thread().name


async def test_requests_share_a_fixed_pool_of_threads(settings, events):
    settings.ROOT_URLCONF = __name__
    for _ in range(3 * HTTP_THREADS):
        assert (await _get("/probe/"))[0] == 200
    names = {name for _, name in events}
    assert len(names) <= HTTP_THREADS and all(name.startswith("http") for name in names)
    assert len(events) == 2 * 3 * HTTP_THREADS


async def test_a_streamed_response_is_sent_whole_and_then_closed(settings, events):
    settings.ROOT_URLCONF = __name__
    communicator = ApplicationCommunicator(django_asgi_app, _scope("/streamed/"))
    await communicator.send_input({"type": "http.request", "body": b""})
    assert (await communicator.receive_output(5))["status"] == 200
    body, more = b"", True
    while more:
        message = await communicator.receive_output(5)
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await communicator.wait(5)
    assert body == b"ab"
    assert [name for name, _ in events] == ["started", "finished"]


async def test_a_client_gone_during_the_view_gets_nothing_and_the_request_still_finishes(settings, events):
    settings.ROOT_URLCONF = __name__
    communicator = ApplicationCommunicator(django_asgi_app, _scope("/slow/"))
    await communicator.send_input({"type": "http.request", "body": b""})
    await asyncio.sleep(0.05)
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(5)
    assert seen_threads  # the view ran to its end
    assert [name for name, _ in events] == ["started", "finished"]
    assert communicator.output_queue.empty()


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
async def test_a_sync_streamed_response_is_not_read_on_the_thread_channels_database_calls_share(settings, events):
    settings.ROOT_URLCONF = __name__
    iterated_in.clear()
    shared = await sync_to_async(threading.get_ident)()  # thread-sensitive, outside any request
    status, _, body = await _get("/file-like/")
    assert status == 200 and body == b"x"
    assert iterated_in and iterated_in[0] != shared
    assert [name for name, _ in events] == ["started", "finished"]


async def test_a_cancelled_application_does_not_cut_short_the_view_or_lose_its_finish(settings, events):
    """daphne cancels the application some seconds after the client went away."""
    settings.ROOT_URLCONF = __name__
    waited.clear()
    communicator = ApplicationCommunicator(django_asgi_app, _scope("/waiting/"))
    await communicator.send_input({"type": "http.request", "body": b""})
    await asyncio.sleep(0.05)
    await communicator.send_input({"type": "http.disconnect"})
    await asyncio.sleep(0.05)
    communicator.future.cancel()
    await asyncio.sleep(0.6)
    assert waited == [True]
    assert [name for name, _ in events] == ["started", "finished"]
