"""Attacks tried against the messenger, each an automated test.

Covered elsewhere, and not repeated here:
- WebSocket auth (messaging/tests/test_consumers.py): a garbage, refresh or expired
  token closes 4401; a first frame that is not `auth`, or silence, closes 4401; a
  deactivated user's token is refused; a foreign `Origin` is refused even with a valid
  session; a session cookie without `Origin` is not used; a user deactivated while
  connected is disconnected at once; the per-user connection cap closes 4429; frames
  over 64 KiB close 1009; message floods get `rate_limited`; `sync` returns only the
  user's own messages.
- REST (messaging/tests/test_api.py, accounts/tests/test_api.py): history of someone
  never talked to is empty and an unknown user is 404; a refresh token is no access
  token; login and registration are throttled per client address; REST and WebSocket
  share the message rate limit; over-long bodies are refused.
- Throttles shared by processes: accounts/tests/test_throttle_processes.py (login);
  registration is below.
- Telegram text escaping (HTML parse mode): notifications/tests/test_services.py.
- Fuzzing: tests/test_fuzz_ws.py (WebSocket frames), tests/test_fuzz_api.py (REST).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

import jwt
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from accounts.models import User
from accounts.tests.factories import PASSWORD, UserFactory
from chatproject.asgi import application
from messaging.models import Message
from messaging.services import message_send
from messaging.tests.ws import connect
from tests.faults_support import http_json
from tests.procs import DaphneServer, require_stack, running

XSS = "<script>alert(1)</script>"
CLOSED_4401 = {"type": "websocket.close", "code": 4401}


def say(sender, recipient, body: str) -> Message:
    return message_send(sender=sender, recipient_username=recipient.username, body=body).message


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client


async def _handshake(path: str = "/ws/chat/", headers=None, subprotocols=None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=headers or [], subprotocols=subprotocols)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _closes_unauthenticated(communicator: WebsocketCommunicator) -> bool:
    """Whether the socket, after a frame that is not `auth`, is closed 4401."""
    await communicator.send_to(text_data=json.dumps({"type": "ping"}))
    return await communicator.receive_output(3) == CLOSED_4401


async def _auth_frame_result(token: str) -> dict:
    communicator = await _handshake()
    await communicator.send_to(text_data=json.dumps({"type": "auth", "token": token}))
    return await communicator.receive_output(3)


# --- WebSocket: tokens in the wrong place, of the wrong kind, forged -----------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("place", ["query token", "query access_token", "authorization header", "subprotocol"])
async def test_a_valid_access_token_anywhere_but_the_auth_frame_does_not_authenticate(alice, place):
    token = str(AccessToken.for_user(alice))
    if place == "query token":
        communicator = await _handshake(f"/ws/chat/?token={token}")
    elif place == "query access_token":
        communicator = await _handshake(f"/ws/chat/?access_token={token}")
    elif place == "authorization header":
        communicator = await _handshake(headers=[(b"authorization", f"Bearer {token}".encode())])
    else:
        communicator = await _handshake(subprotocols=["bearer", token])
    assert await _closes_unauthenticated(communicator)


def _forged(alice, bob) -> dict[str, str]:
    payload = dict(AccessToken.for_user(alice).payload)
    header = {"alg": "none", "typ": "JWT"}
    unsigned = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode() for part in (header, payload)
    )
    bobs = str(AccessToken.for_user(bob)).split(".")
    alice_claims = str(AccessToken.for_user(alice)).split(".")[1]
    return {
        "alg none": unsigned + ".",
        "another key": jwt.encode(payload, "not-the-server-key-" * 3, algorithm="HS256"),
        "claims swapped under a valid signature": f"{bobs[0]}.{alice_claims}.{bobs[2]}",
        "token_type changed": jwt.encode({**payload, "token_type": "refresh"}, settings.SECRET_KEY, algorithm="HS256"),
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "kind", ["alg none", "another key", "claims swapped under a valid signature", "token_type changed"]
)
async def test_forged_tokens_close_with_4401(alice, bob, kind):
    token = (await sync_to_async(_forged)(alice, bob))[kind]
    assert await _auth_frame_result(token) == CLOSED_4401


def _refresh(refresh: str):
    return APIClient().post(reverse("api-token-refresh"), {"refresh": refresh}, format="json")


def _logout(refresh: str):
    return APIClient().post(reverse("api-logout"), {"refresh": refresh}, format="json")


def _is_valid(refresh: str) -> bool:
    try:
        RefreshToken(refresh)  # signature, expiry and the blacklist, as the views check it
    except TokenError:
        return False
    return True


@pytest.mark.django_db
def test_a_blacklisted_refresh_token_is_refused(alice):
    login = APIClient().post(reverse("api-token"), {"username": "alice", "password": PASSWORD}, format="json")
    assert login.status_code == 200
    # Blacklisted by rotation: it worked once, and is refused from then on.
    first = login.json()["refresh"]
    rotated = _refresh(first)
    assert rotated.status_code == 200
    assert _refresh(first).status_code == 401
    # Blacklisted by logout: valid until then, refused by every endpoint after.
    second = rotated.json()["refresh"]
    assert _is_valid(second)
    assert _logout(second).status_code == 205
    assert not _is_valid(second)
    refused = _refresh(second)
    assert refused.status_code == 401 and refused.json()["code"] == "token_not_valid"
    assert _logout(second).status_code == 401
    # Only that token: a fresh login still gets a refresh token that refreshes.
    again = APIClient().post(reverse("api-token"), {"username": "alice", "password": PASSWORD}, format="json")
    assert _refresh(again.json()["refresh"]).status_code == 200


@pytest.mark.django_db
def test_a_new_password_refuses_the_tokens_issued_before_it(alice):
    pair = APIClient().post(reverse("api-token"), {"username": "alice", "password": PASSWORD}, format="json").json()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    assert api.get(reverse("api-conversations")).status_code == 200
    alice.set_password("a-brand-new-password-7")
    alice.save()
    assert api.get(reverse("api-conversations")).status_code == 401
    assert _refresh(pair["refresh"]).status_code == 401


@pytest.mark.django_db(transaction=True)
async def test_the_token_of_a_deleted_user_is_refused(alice):
    token = str(AccessToken.for_user(alice))
    await sync_to_async(alice.delete)()
    assert await _auth_frame_result(token) == CLOSED_4401


@pytest.mark.django_db(transaction=True)
async def test_a_token_expired_by_a_second_is_refused(alice):
    access = AccessToken.for_user(alice)
    access.set_exp(lifetime=-timedelta(seconds=1))
    assert await _auth_frame_result(str(access)) == CLOSED_4401


@pytest.mark.django_db(transaction=True)
async def test_an_authenticated_socket_cannot_switch_to_another_user(alice, bob, carol):
    alice_ws = await connect(alice)
    await alice_ws.send({"type": "auth", "token": str(AccessToken.for_user(bob))})
    assert (await alice_ws.recv_type("error"))["code"] == "bad_frame"
    await alice_ws.send({"type": "send", "to": "carol", "body": "who am I", "client_id": "me"})
    assert (await alice_ws.recv_type("ack"))["message"]["sender"] == "alice"
    await alice_ws.close()


# --- WebSocket: cross-site hijacking ---------------------------------------------------


async def _session_cookie(user) -> bytes:
    http = Client()
    await sync_to_async(http.force_login)(user)
    return f"sessionid={http.cookies['sessionid'].value}".encode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin", [b"null", b"http://localhost.evil.example", b"http://evil.example", b"https://127.0.0.1.evil.example"]
)
async def test_a_hostile_origin_is_refused_at_the_handshake_with_a_session(alice, origin):
    cookie = await _session_cookie(alice)
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"origin", origin), (b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert not connected


@pytest.mark.django_db(transaction=True)
async def test_a_hostile_origin_is_refused_even_without_a_cookie(alice):
    """A page elsewhere must not open a socket and try tokens it stole or guessed."""
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await communicator.connect()
    assert not connected


@pytest.mark.django_db(transaction=True)
async def test_a_logged_out_session_does_not_authenticate_a_socket(alice):
    http = Client()
    await sync_to_async(http.force_login)(alice)
    cookie = f"sessionid={http.cookies['sessionid'].value}".encode()
    await sync_to_async(http.post)(reverse("logout"))
    communicator = await _handshake(headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)])
    assert await _closes_unauthenticated(communicator)


# --- Other people's conversations ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_read_with_another_conversations_message_id_reveals_nothing_of_it(alice, bob, carol):
    ours = await sync_to_async(say)(bob, alice, "ours")
    theirs = await sync_to_async(say)(carol, bob, "theirs")
    assert theirs.pk > ours.pk
    alice_ws, bob_ws, carol_ws = await connect(alice), await connect(bob), await connect(carol)
    await alice_ws.send({"type": "read", "peer": "bob", "up_to": theirs.pk})
    assert (await bob_ws.recv_type("read"))["up_to"] == ours.pk  # clamped to their own conversation
    assert await carol_ws.nothing(0.3)
    for socket in (alice_ws, bob_ws, carol_ws):
        await socket.close()


async def _answers_to(client, frame: dict) -> list[dict]:
    """Every frame the server sends back for `frame` (a `ping` after it marks the end:
    frames are answered in order)."""
    await client.send(frame)
    await client.send({"type": "ping"})
    answers = []
    while (answer := await client.recv()) != {"type": "pong"}:
        if answer["type"] != "presence":
            answers.append(answer)
    return answers


@pytest.mark.django_db(transaction=True)
async def test_read_answers_a_stranger_and_an_unknown_name_alike_and_reveals_nothing(alice, bob, carol):
    """Whether two other people talk, or whether a name exists beyond the users page,
    is not revealed by the answer to `read`; bob is told nothing."""
    private = await sync_to_async(say)(bob, carol, "private")
    alice_ws, bob_ws = await connect(alice), await connect(bob)
    answers = {}
    for name in ("bob", "nobody"):
        frames = await _answers_to(alice_ws, {"type": "read", "peer": name, "up_to": private.pk})
        answers[name] = [
            {**f, "detail": f["detail"].replace(name, "NAME")} if f["type"] == "error" else f for f in frames
        ]
    assert answers["bob"] == answers["nobody"], answers
    [error] = answers["nobody"]
    assert error["type"] == "error" and error["code"] == "not_found"
    assert await bob_ws.nothing(0.5)
    for socket in (alice_ws, bob_ws):
        await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_typing_reaches_anyone_one_may_write_to_and_an_unknown_name_is_not_found(alice, bob, carol):
    """Anyone on the users page may be written to, so they may be shown typing too (as
    before a first message); an unknown name is `not_found`; nobody else hears of it."""
    await sync_to_async(say)(bob, carol, "private")
    alice_ws, bob_ws, carol_ws = await connect(alice), await connect(bob), await connect(carol)
    assert await _answers_to(alice_ws, {"type": "typing", "to": "bob"}) == []
    assert (await bob_ws.recv_type("typing")) == {"type": "typing", "from": "alice"}
    [error] = await _answers_to(alice_ws, {"type": "typing", "to": "nobody"})
    assert error["type"] == "error" and error["code"] == "not_found"
    assert await carol_ws.nothing(0.5)
    for socket in (alice_ws, bob_ws, carol_ws):
        await socket.close()


@pytest.mark.django_db
def test_nobody_reaches_a_conversation_they_are_not_in_over_rest(alice, bob, carol):
    secret = say(bob, carol, "between bob and carol")
    alice_api = api_for(alice)
    conversations = alice_api.get(reverse("api-conversations")).json()
    assert conversations == {"results": [], "next": None}
    for peer in ("bob", "carol"):
        assert alice_api.get(reverse("api-messages", args=[peer])).json() == {"results": [], "next": None}
        response = alice_api.post(reverse("api-read", args=[peer]), {"up_to": secret.pk}, format="json")
        assert response.status_code == 404
    # Marking "read" in her own conversation up to their message id moves nothing past it.
    say(bob, alice, "hi alice")
    alice_api.post(reverse("api-read", args=["bob"]), {"up_to": secret.pk + 10}, format="json")
    bob_row = api_for(bob).get(reverse("api-conversations")).json()["results"]
    assert {row["peer"]["username"]: row["peer_read_up_to"] for row in bob_row}["alice"] == (
        Message.objects.filter(sender=bob, recipient=alice).get().pk
    )


@pytest.mark.django_db
def test_a_client_id_someone_else_used_does_not_return_their_message(alice, bob, carol):
    theirs = message_send(sender=carol, recipient_username="bob", body="carol's", client_id="c-1").message
    response = api_for(alice).post(
        reverse("api-messages", args=["bob"]), {"body": "alice's", "client_id": "c-1"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["id"] != theirs.pk and response.json()["body"] == "alice's"


@pytest.mark.django_db
def test_an_inactive_user_is_as_unknown_as_a_name_that_never_existed(alice):
    UserFactory(username="gone", is_active=False)
    alice_api = api_for(alice)
    listed = [user["username"] for user in alice_api.get(reverse("api-users"), {"search": "gone"}).json()["results"]]
    assert listed == []
    answers = {}
    for name in ("gone", "never"):
        response = alice_api.get(reverse("api-messages", args=[name]))
        answers[name] = (response.status_code, response.json()["detail"].replace(name, "NAME"))
        sent = alice_api.post(reverse("api-messages", args=[name]), {"body": "hi"}, format="json")
        assert sent.status_code == 404
    assert answers["gone"] == answers["never"] and answers["never"][0] == 404
    assert not Message.objects.exists()


PROTECTED = [
    ("get", "api-me", []),
    ("get", "api-users", []),
    ("get", "api-conversations", []),
    ("get", "api-messages", ["bob"]),
    ("post", "api-messages", ["bob"]),
    ("post", "api-read", ["bob"]),
    ("post", "api-telegram-link", []),
    ("delete", "api-telegram-link", []),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "name", "args"), PROTECTED)
def test_every_api_endpoint_but_auth_needs_a_valid_access_token(alice, bob, method, name, args):
    url = reverse(name, args=args)
    refresh = str(RefreshToken.for_user(alice))
    for authorization in (None, "Bearer nonsense", f"Bearer {refresh}", f"Token {AccessToken.for_user(alice)}"):
        client = APIClient()
        if authorization:
            client.credentials(HTTP_AUTHORIZATION=authorization)
        response = getattr(client, method)(url, {"body": "hi", "up_to": 1}, format="json")
        assert response.status_code == 401, (authorization, response.content)
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_a_browser_session_cannot_post_to_the_api_without_the_csrf_token(alice, bob):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    response = browser.post(
        reverse("api-messages", args=["bob"]), json.dumps({"body": "forged"}), content_type="application/json"
    )
    assert response.status_code == 403
    assert not Message.objects.exists()
    assert browser.get(reverse("api-me")).status_code == 200  # reading with the session is fine


# --- Stored and reflected XSS --------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("username", [XSS, "<b>", 'a"b', "a'b", "a&b", "a b", "a/b", "a>b", "\u202egnp.exe"])
def test_usernames_that_could_carry_markup_are_refused_by_api_and_form(username):
    response = APIClient().post(
        reverse("api-register"), {"username": username, "password": "a-Long-pass-phrase-9"}, format="json"
    )
    assert response.status_code == 400 and "username" in response.json()
    page = Client().post(
        reverse("register"),
        {"username": username, "password1": "a-Long-pass-phrase-9", "password2": "a-Long-pass-phrase-9"},
    )
    assert page.status_code == 200 and not User.objects.filter(username=username).exists()
    content = page.content.decode()
    if "<" in username or '"' in username:
        assert username not in content  # the form shows the rejected name escaped


@pytest.mark.django_db
def test_a_script_in_a_message_is_never_served_unescaped(alice, bob, admin_client):
    stored = say(alice, bob, f"{XSS} & \"quotes\" 'too'")
    response = api_for(bob).get(reverse("api-messages", args=["alice"]))
    # The API returns the text verbatim, as JSON that no browser renders as a page.
    assert response.json()["results"][0]["body"] == stored.body
    assert response["Content-Type"] == "application/json" and response["X-Content-Type-Options"] == "nosniff"
    browser = Client()
    browser.force_login(bob)
    pages = [browser.get(url) for url in (reverse("home"), reverse("users"), reverse("chat", args=["alice"]))]
    conversation = stored.conversation
    pages += [
        admin_client.get(reverse("admin:messaging_message_changelist")),
        admin_client.get(reverse("admin:messaging_message_changelist"), {"q": XSS}),
        admin_client.get(reverse("admin:messaging_message_change", args=[stored.pk])),
        admin_client.get(reverse("admin:messaging_conversation_change", args=[conversation.pk])),
    ]
    for page in pages:
        assert page.status_code == 200, page
        assert XSS not in page.content.decode(), page.request["PATH_INFO"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[3].content.decode()


@pytest.mark.django_db
def test_a_search_is_reflected_escaped(alice):
    browser = Client()
    browser.force_login(alice)
    content = browser.get(reverse("users"), {"q": f'"><svg onload=alert(1)>{XSS}'}).content.decode()
    assert XSS not in content and "<svg onload" not in content and '"><svg' not in content
    assert "&lt;script&gt;" in content


# Registration refuses markup in names (above), but an account can come from elsewhere
# (an import, a shell, an older version): pages must escape whatever name they get.
MARKUP_NAME = "x\"'&<img src=x onerror=alert(1)>"


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["@.+-_x", MARKUP_NAME], ids=["most hostile allowed", "markup stored directly"])
def test_the_most_hostile_allowed_username_is_shown_escaped_everywhere(alice, admin_client, name):
    """Django's validator allows letters, digits and @.+-_ (none of them markup); a
    name stored without it may hold anything. Every page that shows a name shows it
    escaped, and never its raw markup."""
    odd = User.objects.create_user(username=name, password=PASSWORD)
    message = say(odd, alice, "hello")
    alice_browser, odd_browser = Client(), Client()
    alice_browser.force_login(alice)
    odd_browser.force_login(odd)
    pages = {
        "users page": alice_browser.get(reverse("users")),
        "users search": alice_browser.get(reverse("users"), {"q": name[:3]}),
        "chat page": alice_browser.get(reverse("chat", args=[name])),
        # The name in the header and the page's data for the scripts, for its owner.
        "own home": odd_browser.get(reverse("home")),
        "own settings": odd_browser.get(reverse("settings")),
        "admin user list": admin_client.get(reverse("admin:accounts_user_changelist")),
        "admin user": admin_client.get(reverse("admin:accounts_user_change", args=[odd.pk])),
        "admin messages": admin_client.get(reverse("admin:messaging_message_changelist")),
        "admin message": admin_client.get(reverse("admin:messaging_message_change", args=[message.pk])),
    }
    escaped = html.escape(name)
    for where, page in pages.items():
        assert page.status_code == 200, where
        content = page.content.decode()
        assert escaped in content, f"{where}: the name is not shown"
        if escaped != name:
            assert name not in content, f"{where}: the name is shown unescaped"
            assert "<img src=x" not in content, f"{where}: its markup is on the page"


# --- Throttles shared by server processes --------------------------------------------


def _register(base_url: str, username: str) -> int:
    return http_json(f"{base_url}/api/auth/register/", body={"username": username, "password": PASSWORD})[0]


@pytest.mark.stack
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_registration_floods_are_throttled_across_server_processes():
    require_stack()
    with running(DaphneServer(THROTTLE_RATES="register=4/hour"), DaphneServer(THROTTLE_RATES="register=4/hour")) as (
        a,
        b,
    ):
        statuses = [_register(server.url, f"flood{i}") for i, server in enumerate((a, b, a, b, a, b))]
    assert statuses == [201] * 4 + [429] * 2
    assert User.objects.filter(username__startswith="flood").count() == 4


# --- Over-size requests and frames, to a real server ----------------------------------
# The API's 413 needs REST_FRAMEWORK["EXCEPTION_HANDLER"] = chatproject.api_errors'
# handler (settings), the 1009 under daphne chatproject.ws_close.install() (asgi).

MEGABYTES = 5 * 2**20


@pytest.fixture(scope="module")
def server(django_db_blocker):
    require_stack()
    with django_db_blocker.unblock(), running(DaphneServer()) as (server,):
        yield server


def _http(server: DaphneServer, method: str, path: str, body: bytes = b"", headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.msg, response.read()
    finally:
        connection.close()


def _form_post(server: DaphneServer, path: str, fields: dict[str, str]):
    """POST a form the way a browser does: with the CSRF cookie and field of its page."""
    status, headers, page = _http(server, "GET", path)
    assert status == 200
    cookie = next(c.split(";")[0] for c in headers.get_all("Set-Cookie") if c.startswith("csrftoken="))
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    body = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token}).encode()
    return _http(server, "POST", path, body, {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})


def _json_post(server: DaphneServer, path: str, data: dict, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return _http(server, "POST", path, json.dumps(data).encode(), headers)


OVER_SIZE_POSTS = {
    "REST send": lambda s, u: _json_post(
        s, "/api/conversations/bob/messages/", {"body": "x" * MEGABYTES}, str(AccessToken.for_user(u))
    ),
    "REST login": lambda s, u: _json_post(s, "/api/auth/token/", {"username": "alice", "password": "x" * MEGABYTES}),
    "REST registration": lambda s, u: _json_post(
        s, "/api/auth/register/", {"username": "newcomer", "password": PASSWORD, "email": "x" * MEGABYTES}
    ),
    "login form": lambda s, u: _form_post(s, "/accounts/login/", {"username": "alice", "password": "x" * MEGABYTES}),
    "registration form": lambda s, u: _form_post(
        s, "/accounts/register/", {"username": "newcomer", "password1": "x" * MEGABYTES, "password2": "x"}
    ),
}


def _stored() -> dict[str, int]:
    return {
        "messages": Message.objects.count(),
        "users": User.objects.count(),
        "refresh tokens": OutstandingToken.objects.count(),
        "logins": User.objects.filter(last_login__isnull=False).count(),
    }


@pytest.mark.stack
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("target", list(OVER_SIZE_POSTS))
def test_a_body_of_megabytes_is_refused_clearly_stores_nothing_and_the_server_goes_on(server, alice, bob, target):
    before = _stored()
    status, headers, body = OVER_SIZE_POSTS[target](server, alice)
    if target.startswith("REST"):
        # The contract's error shape, as for any other refused request.
        assert (status, headers["Content-Type"]) == (413, "application/json"), (status, body[:200])
        assert "too large" in json.loads(body)["detail"]
    else:
        assert status in (400, 413), (status, body[:200])
    assert _stored() == before
    # The server goes on as before.
    assert _http(server, "GET", "/healthz")[0] == 200
    status, _, body = _json_post(
        server, "/api/conversations/bob/messages/", {"body": "after"}, str(AccessToken.for_user(alice))
    )
    assert status == 201 and json.loads(body)["body"] == "after"


@pytest.mark.stack
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("size", [64 * 1024 + 1, MEGABYTES], ids=["just over 64 KiB", "megabytes"])
async def test_an_over_size_frame_closes_the_socket_with_1009_stores_nothing_and_the_server_goes_on(
    server, alice, bob, size
):
    token = str(AccessToken.for_user(alice))

    async def open_socket():
        ws = await ws_connect(server.ws_url, max_size=2**20, open_timeout=10)
        await ws.send(json.dumps({"type": "auth", "token": token}))
        async with asyncio.timeout(10):
            assert json.loads(await ws.recv())["type"] == "ready"
        return ws

    ws = await open_socket()
    with contextlib.suppress(ConnectionClosed):  # the server may close while it is sent
        await ws.send(json.dumps({"type": "send", "to": "bob", "body": "x" * size, "client_id": "big"}))
    async with asyncio.timeout(10):
        await ws.wait_closed()
    assert ws.close_code == 1009
    assert not await Message.objects.aexists()
    ws = await open_socket()
    await ws.send(json.dumps({"type": "send", "to": "bob", "body": "after", "client_id": "after"}))
    async with asyncio.timeout(10):
        while (frame := json.loads(await ws.recv()))["type"] != "ack":
            pass
    assert frame["message"]["body"] == "after"
    await ws.close()


# --- Known server errors on PostgreSQL (reported; the fix is outside these files) -----


def _cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


NUL_ON_POSTGRESQL = [
    ("browser", "/chat/%00/"),
    ("browser", "/users/?q=%00"),
    ("api", "/api/users/?search=%00"),
    ("api", "/api/conversations/%00/messages/"),
    ("api", "/api/users/?cursor=" + _cursor("p=%00")),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("client_kind", "url"), NUL_ON_POSTGRESQL)
def test_a_nul_in_a_name_search_or_cursor_is_no_server_error(alice, client_kind, url):
    client = api_for(alice) if client_kind == "api" else Client()
    if client_kind == "browser":
        client.force_login(alice)
    assert client.get(url).status_code in (200, 400, 404)


@pytest.mark.django_db
def test_a_crafted_cursor_is_no_server_error(alice):
    response = api_for(alice).get(reverse("api-conversations"), {"cursor": _cursor("p=abc")})
    assert response.status_code in (400, 404)


@pytest.mark.django_db(transaction=True)
async def test_deeply_nested_json_as_the_first_frame_closes_with_4401():
    communicator = await _handshake()
    await communicator.send_to(text_data="[" * 4000 + "]" * 4000)
    assert await communicator.receive_output(3) == CLOSED_4401


# --- Browser hardening -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"]
)
def test_login_never_redirects_off_site(alice, target):
    response = Client().post(
        f"{reverse('login')}?next={target}", {"username": "alice", "password": PASSWORD, "next": target}
    )
    assert response.status_code == 302 and response["Location"] == reverse("home")


@pytest.mark.django_db
def test_pages_refuse_framing_and_sniffing_and_keep_the_session_cookie_from_scripts(alice, bob):
    browser = Client()
    response = browser.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.cookies["sessionid"]["httponly"]
    for url in (reverse("home"), reverse("chat", args=["bob"]), reverse("users"), reverse("settings")):
        page = browser.get(url)
        assert page.status_code == 200, url
        assert page["X-Frame-Options"] == "DENY" and page["X-Content-Type-Options"] == "nosniff", url
