"""Static files under ASGI, from the async-capable WhiteNoise middleware."""

import pytest
from asgiref.sync import iscoroutinefunction
from channels.testing import HttpCommunicator
from django.http import HttpResponse

from chatproject.asgi import django_asgi_app
from chatproject.static_files import StaticFilesMiddleware


async def _get(path: str) -> dict:
    """The response, its headers lower-cased and its body joined (it may stream)."""
    communicator = HttpCommunicator(django_asgi_app, "GET", path, headers=[(b"host", b"localhost")])
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    body = b""
    while True:
        message = await communicator.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(5)
    headers = {key.lower(): value for key, value in start["headers"]}
    return {"status": start["status"], "headers": headers, "body": body}


def test_in_an_async_chain_the_middleware_is_async_and_in_a_sync_one_sync():
    async def async_view(request):
        return HttpResponse("async")

    assert iscoroutinefunction(StaticFilesMiddleware(async_view))
    assert not iscoroutinefunction(StaticFilesMiddleware(lambda request: HttpResponse("sync")))


@pytest.mark.django_db(transaction=True)
async def test_a_static_file_is_served_through_the_asgi_application():
    response = await _get("/static/js/socket.js")
    assert response["status"] == 200
    assert b"javascript" in response["headers"][b"content-type"]
    assert b"new WebSocket(" in response["body"]


@pytest.mark.django_db(transaction=True)
async def test_other_requests_pass_through_to_the_views():
    response = await _get("/healthz")
    assert response["status"] in (200, 503)
    assert b"content-security-policy" in response["headers"]
    response = await _get("/static/js/no-such-file.js")
    assert response["status"] == 404
