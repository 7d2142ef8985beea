"""Two real daphne processes on the Redis channel layer and PostgreSQL, real WebSocket
clients: what a deployment with several web processes does."""

import asyncio
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client as HttpClient
from rest_framework_simplejwt.tokens import AccessToken
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from accounts.models import User
from accounts.tests.factories import UserFactory
from messaging.models import Message
from tests.procs import DaphneServer, require_stack, running

pytestmark = [pytest.mark.stack, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Socket:
    def __init__(self, ws) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, server: DaphneServer, user) -> "Socket":
        ws = await ws_connect(server.ws_url, max_size=2**20)
        await ws.send(json.dumps({"type": "auth", "token": str(AccessToken.for_user(user))}))
        socket = cls(ws)
        socket.ready = await socket.next("ready")
        return socket

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    async def next(self, frame_type: str, timeout: float = 10) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await self.ws.recv())
                if frame["type"] == frame_type:
                    return frame

    async def messages(self, count: int, timeout: float = 30) -> list[dict]:
        return [(await self.next("message", timeout))["message"] for _ in range(count)]

    async def quiet(self, seconds: float = 0.5) -> list[dict]:
        """Frames other than presence that arrive within `seconds`."""
        extra = []
        try:
            async with asyncio.timeout(seconds):
                while True:
                    frame = json.loads(await self.ws.recv())
                    if frame["type"] != "presence":
                        extra.append(frame)
        except TimeoutError:
            return extra

    async def close_code(self, timeout: float = 5) -> int | None:
        """The code the server closes this socket with (frames meanwhile are skipped)."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture(scope="module")
def servers(django_db_blocker):
    require_stack()
    # The test database exists for the module: the processes connect to it.
    with django_db_blocker.unblock():
        a = DaphneServer(CHAT_RATE_LIMIT="100000/1")
        b = DaphneServer(CHAT_RATE_LIMIT="100000/1")
        with running(a, b):
            yield a, b


def _get_json(url: str, user) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {AccessToken.for_user(user)}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def test_alice_and_bob_in_two_tabs_on_another_process_exchange_messages(servers, alice, bob):
    a, b = servers
    alice_ws = await Socket.open(a, alice)
    bob_tab1, bob_tab2 = await Socket.open(b, bob), await Socket.open(b, bob)

    await alice_ws.send({"type": "send", "to": "bob", "body": "hi bob", "client_id": "a-1"})
    ack = await alice_ws.next("ack")
    for tab in (bob_tab1, bob_tab2):
        assert (await tab.next("message"))["message"] == ack["message"]

    await bob_tab1.send({"type": "send", "to": "alice", "body": "hi alice", "client_id": "b-1"})
    reply = (await bob_tab1.next("ack"))["message"]
    assert (await alice_ws.next("message"))["message"] == reply
    assert (await bob_tab2.next("message"))["message"] == reply

    # bob's second tab goes away; what it misses comes back with sync, exactly.
    last_seen = reply["id"]
    await bob_tab2.close()
    missed = []
    for i in range(3):
        await alice_ws.send({"type": "send", "to": "bob", "body": f"while away {i}", "client_id": f"a-away-{i}"})
        missed.append((await alice_ws.next("ack"))["message"])
    bob_tab2 = await Socket.open(a, bob)  # reconnects, this time to the other process
    await bob_tab2.send({"type": "sync", "since": last_seen})
    assert await bob_tab2.messages(3) == missed
    assert await bob_tab2.next("synced") == {"type": "synced", "last_id": missed[-1]["id"], "more": False}
    assert await bob_tab2.quiet() == []
    assert await bob_tab1.messages(3) == missed

    for socket in (alice_ws, bob_tab1, bob_tab2):
        await socket.close()


async def test_a_burst_across_processes_reaches_every_tab_once_and_in_order(servers, alice, bob):
    a, b = servers
    alice_ws = await Socket.open(a, alice)
    bob_tabs = [await Socket.open(b, bob), await Socket.open(a, bob)]
    count = 400
    for i in range(count):
        await alice_ws.send({"type": "send", "to": "bob", "body": f"burst {i}", "client_id": f"burst-{i}"})
    acks = [(await alice_ws.next("ack", 60))["message"] for _ in range(count)]
    assert [m["body"] for m in acks] == [f"burst {i}" for i in range(count)]
    for tab in bob_tabs:
        received = await tab.messages(count, timeout=60)
        assert [m["id"] for m in received] == [m["id"] for m in acks]
        assert await tab.quiet(0.5) == []
    assert await Message.objects.filter(sender=alice).acount() == count
    for socket in (alice_ws, *bob_tabs):
        await socket.close()


async def test_both_processes_sending_into_one_conversation_keep_the_cached_history_true(servers, alice, bob):
    a, b = servers
    alice_ws, bob_ws = await Socket.open(a, alice), await Socket.open(b, bob)
    await alice_ws.send({"type": "send", "to": "bob", "body": "warm the cache", "client_id": "warm"})
    await alice_ws.next("ack")
    await sync_to_async(_get_json)(f"{a.url}/api/conversations/bob/messages/", alice)

    async def flood(socket: Socket, to: str, prefix: str) -> None:
        for i in range(40):
            await socket.send({"type": "send", "to": to, "body": f"{prefix}{i}", "client_id": f"{prefix}{i}"})
        for _ in range(40):
            await socket.next("ack", 30)

    await asyncio.gather(flood(alice_ws, "bob", "a"), flood(bob_ws, "alice", "b"))
    expected = await sync_to_async(
        lambda: list(Message.objects.filter(sender__in=[alice, bob]).order_by("-id").values_list("id", flat=True)[:50])
    )()
    for server in (a, b):
        cached = await sync_to_async(_get_json)(f"{server.url}/api/conversations/bob/messages/", alice)
        assert [m["id"] for m in cached["results"]] == expected
    await alice_ws.close()
    await bob_ws.close()


async def _refused_with(server: DaphneServer, user) -> int | None:
    """Connect and authenticate; the close code when the server refuses, else None."""
    ws = await ws_connect(server.ws_url)
    await ws.send(json.dumps({"type": "auth", "token": str(AccessToken.for_user(user))}))
    socket = Socket(ws)
    try:
        await socket.next("ready", timeout=5)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    await socket.close()
    return None


def _admin_session(user) -> str:
    browser = HttpClient()
    browser.force_login(user)
    return browser.cookies["sessionid"].value


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _admin_bulk_action(server: DaphneServer, session: str, action: str, user_ids: list[int]) -> int:
    """Run an action of the user changelist on this server, as the admin's browser
    does (deletion confirmed); the answer's status: 302 back to the list once done,
    200 when the action was refused."""
    url = f"{server.url}/admin/accounts/user/"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": f"sessionid={session}"})) as page:
        csrf_cookie = re.search(r"csrftoken=([^;]+)", page.headers["Set-Cookie"]).group(1)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode()).group(1)
    fields = {"action": action, "_selected_action": user_ids, "index": 0, "csrfmiddlewaretoken": csrf}
    if action == "delete_selected":
        fields["post"] = "yes"
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(fields, doseq=True).encode(),
        headers={"Cookie": f"sessionid={session}; csrftoken={csrf_cookie}"},
    )
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("action", ["deactivate_users", "delete_selected"])
async def test_a_user_deactivated_or_deleted_in_the_admin_of_one_process_is_disconnected_on_every_process(
    servers, alice, bob, action
):
    a, b = servers
    root = await sync_to_async(UserFactory)(username="root", is_staff=True, is_superuser=True)
    session = await sync_to_async(_admin_session)(root)
    alice_tabs = [await Socket.open(a, alice), await Socket.open(b, alice)]
    bob_ws = await Socket.open(b, bob)
    assert await sync_to_async(_admin_bulk_action)(a, session, action, [alice.pk]) == 302
    for tab in alice_tabs:
        assert await tab.close_code() == 4401
    assert await _refused_with(b, alice) == 4401
    await bob_ws.send({"type": "ping"})
    assert await bob_ws.next("pong")
    remaining = await sync_to_async(lambda: dict(User.objects.values_list("username", "is_active")))()
    assert remaining == (
        {"root": True, "alice": False, "bob": True} if action == "deactivate_users" else {"root": True, "bob": True}
    )
    await bob_ws.close()


async def test_the_per_user_connection_cap_counts_the_connections_on_every_process(servers, alice):
    a, b = servers
    cap = settings.MAX_CONNECTIONS_PER_USER  # the processes read the same environment
    tabs = [await Socket.open((a, b)[i % 2], alice) for i in range(cap)]
    assert await _refused_with(a, alice) == 4429
    assert await _refused_with(b, alice) == 4429
    await tabs.pop(0).close()  # a tab on `a` closes: room for one more, on either process

    async def room_on_b() -> bool:
        return await _refused_with(b, alice) is None

    for _ in range(50):
        if await room_on_b():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("no room after a tab closed")
    for tab in tabs:
        await tab.close()
