"""Presence survives a crash: a server process killed with SIGKILL closes nothing,
yet its users are reported offline once their connections' heartbeats expire."""

import asyncio
import json
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from messaging.services import message_send
from messaging.tests.test_processes import Socket
from tests.procs import DaphneServer, require_stack, running

pytestmark = [pytest.mark.stack, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 2


def _online(server: DaphneServer, viewer, username: str) -> bool:
    request = urllib.request.Request(
        f"{server.url}/api/users/?search={username}",
        headers={"Authorization": f"Bearer {AccessToken.for_user(viewer)}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["results"][0]["online"]


async def test_users_of_a_killed_process_go_offline_after_the_timeout(django_db_blocker, alice, bob):
    require_stack()
    await sync_to_async(message_send)(sender=alice, recipient_username="bob", body="hi")
    survivor = DaphneServer(PRESENCE_TIMEOUT_SECONDS=str(TIMEOUT))
    doomed = DaphneServer(PRESENCE_TIMEOUT_SECONDS=str(TIMEOUT))
    with running(survivor, doomed):
        alice_ws = await Socket.open(survivor, alice)
        bob_ws = await Socket.open(doomed, bob)
        online = await alice_ws.next("presence")
        assert online["user"] == "bob" and online["online"] is True
        assert await sync_to_async(_online)(survivor, alice, "bob")

        doomed.kill()
        offline = await alice_ws.next("presence", timeout=TIMEOUT * 4)
        assert offline["user"] == "bob" and offline["online"] is False and offline["last_seen"]
        assert not await sync_to_async(_online)(survivor, alice, "bob")

        # alice, on the live process, keeps pinging and stays online
        await alice_ws.send({"type": "ping"})
        await alice_ws.next("pong")
        assert await sync_to_async(_online)(survivor, bob, "alice")
        await alice_ws.close()
        del bob_ws
        await asyncio.sleep(0)
