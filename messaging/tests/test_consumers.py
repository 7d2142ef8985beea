"""The WebSocket protocol, through the real ASGI application."""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.tests.factories import UserFactory
from chatproject.asgi import application
from messaging import selectors, ws_auth
from messaging.models import Message
from messaging.services import message_send
from messaging.tests.ws import Client, connect

pytestmark = pytest.mark.django_db(transaction=True)


async def send(client: Client, to: str, body: str, client_id: str | None = None) -> dict:
    frame = {"type": "send", "to": to, "body": body}
    if client_id is not None:
        frame["client_id"] = client_id
    await client.send(frame)
    return await client.recv_type("ack")


async def raw(headers=None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers or [])
    return communicator


# --- authentication --------------------------------------------------------------


async def test_token_auth_gets_ready_with_the_user_and_last_message_id(alice, bob):
    stored = await sync_to_async(message_send)(sender=bob, recipient_username="alice", body="hi")
    client = await connect(alice)
    assert client.ready == {
        "type": "ready",
        "user": {"id": alice.pk, "username": "alice"},
        "last_message_id": stored.message.pk,
    }
    await client.close()


@pytest.mark.parametrize("token_kind", ["garbage", "refresh", "expired"])
async def test_a_bad_refresh_or_expired_token_closes_with_4401(alice, token_kind):
    if token_kind == "refresh":
        token = str(await sync_to_async(RefreshToken.for_user)(alice))
    elif token_kind == "expired":
        access = AccessToken.for_user(alice)
        access.set_exp(lifetime=-timedelta(seconds=1))
        token = str(access)
    else:
        token = "not-a-token"
    communicator = await raw()
    assert (await communicator.connect())[0]
    await communicator.send_to(text_data=json.dumps({"type": "auth", "token": token}))
    assert await communicator.receive_output(3) == {"type": "websocket.close", "code": 4401}


async def test_a_first_frame_that_is_not_auth_closes_with_4401(alice):
    communicator = await raw()
    await communicator.connect()
    await communicator.send_to(text_data=json.dumps({"type": "ping"}))
    assert await communicator.receive_output(3) == {"type": "websocket.close", "code": 4401}


async def test_silence_instead_of_auth_closes_with_4401(alice, monkeypatch):
    monkeypatch.setattr(ws_auth, "AUTH_TIMEOUT_SECONDS", 0.2)
    communicator = await raw()
    await communicator.connect()
    assert await communicator.receive_output(3) == {"type": "websocket.close", "code": 4401}


async def test_a_deactivated_users_token_is_refused(alice):
    token = str(AccessToken.for_user(alice))
    alice.is_active = False
    await sync_to_async(alice.save)()
    communicator = await raw()
    await communicator.connect()
    await communicator.send_to(text_data=json.dumps({"type": "auth", "token": token}))
    assert await communicator.receive_output(3) == {"type": "websocket.close", "code": 4401}


async def test_a_token_issued_before_a_new_password_is_refused(alice):
    token = str(AccessToken.for_user(alice))
    assert (await connect_with_token(token)) == "ready"
    alice.set_password("a-brand-new-password-7")
    await sync_to_async(alice.save)()
    assert (await connect_with_token(token)) == 4401
    assert (await connect_with_token(str(AccessToken.for_user(alice)))) == "ready"


async def connect_with_token(token: str):
    """The string "ready", or the close code."""
    communicator = await raw()
    await communicator.connect()
    await communicator.send_to(text_data=json.dumps({"type": "auth", "token": token}))
    output = await communicator.receive_output(3)
    if output["type"] == "websocket.close":
        return output["code"]
    assert json.loads(output["text"])["type"] == "ready"
    await communicator.disconnect()
    return "ready"


async def _session_cookie(user) -> bytes:
    from django.test import Client as HttpClient

    http = HttpClient()
    await sync_to_async(http.force_login)(user)
    return f"sessionid={http.cookies['sessionid'].value}".encode()


async def test_a_browser_session_with_an_allowed_origin_is_authenticated(alice):
    cookie = await _session_cookie(alice)
    communicator = await raw([(b"origin", b"http://localhost"), (b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert connected
    ready = json.loads(await communicator.receive_from(3))
    assert ready["type"] == "ready" and ready["user"]["username"] == "alice"
    await communicator.disconnect()


async def test_a_foreign_origin_is_refused_at_the_handshake_even_with_a_valid_session(alice):
    cookie = await _session_cookie(alice)
    communicator = await raw([(b"origin", b"http://evil.example"), (b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert not connected


async def test_a_session_cookie_without_origin_is_not_used(alice):
    cookie = await _session_cookie(alice)
    communicator = await raw([(b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert connected  # accepted, but it must authenticate with a token
    await communicator.send_to(text_data=json.dumps({"type": "ping"}))
    assert await communicator.receive_output(3) == {"type": "websocket.close", "code": 4401}


# --- send / ack / message ---------------------------------------------------------


async def test_a_message_reaches_every_socket_of_both_people_and_the_sender_gets_an_ack(alice, bob):
    alice_tab1, alice_tab2 = await connect(alice), await connect(alice)
    bob_tab1, bob_tab2 = await connect(bob), await connect(bob)
    ack = await send(alice_tab1, "bob", "hello bob", "c-1")
    message = ack["message"]
    assert ack["client_id"] == "c-1"
    assert message["sender"] == "alice" and message["recipient"] == "bob" and message["body"] == "hello bob"
    assert message["client_id"] == "c-1" and message["created_at"].endswith("Z")
    for other in (alice_tab2, bob_tab1, bob_tab2):
        assert await other.recv_type("message") == {"type": "message", "message": message}
    assert await alice_tab1.nothing()
    for client in (alice_tab1, alice_tab2, bob_tab1, bob_tab2):
        await client.close()


async def test_a_retry_with_the_same_client_id_gets_the_same_ack_and_stores_nothing_new(alice, bob):
    alice_ws, bob_ws = await connect(alice), await connect(bob)
    first = await send(alice_ws, "bob", "once", "retry-1")
    await bob_ws.recv_type("message")
    second = await send(alice_ws, "bob", "once", "retry-1")
    assert second == first
    assert await bob_ws.nothing()
    assert await Message.objects.filter(sender=alice).acount() == 1
    await alice_ws.close()
    await bob_ws.close()


async def test_concurrent_retries_store_one_row_and_ack_the_same_message(alice, bob):
    tabs = [await connect(alice) for _ in range(4)]
    for tab in tabs:
        await tab.send({"type": "send", "to": "bob", "body": "race", "client_id": "same"})
    acks = [await tab.recv_type("ack") for tab in tabs]
    assert len({ack["message"]["id"] for ack in acks}) == 1
    assert await Message.objects.filter(sender=alice, client_id="same").acount() == 1
    for tab in tabs:
        await tab.close()


async def test_messages_arrive_in_order(alice, bob):
    alice_ws, bob_ws = await connect(alice), await connect(bob)
    for i in range(20):
        await alice_ws.send({"type": "send", "to": "bob", "body": f"m{i}", "client_id": f"o-{i}"})
    received = [(await bob_ws.recv_type("message"))["message"] for _ in range(20)]
    assert [m["body"] for m in received] == [f"m{i}" for i in range(20)]
    assert [m["id"] for m in received] == sorted(m["id"] for m in received)
    await alice_ws.close()
    await bob_ws.close()


async def test_a_message_sent_over_rest_or_a_service_reaches_the_sockets(alice, bob):
    bob_ws = await connect(bob)
    stored = await sync_to_async(message_send)(sender=alice, recipient_username="bob", body="from rest")
    frame = await bob_ws.recv_type("message")
    assert frame["message"]["id"] == stored.message.pk
    await bob_ws.close()


async def test_a_message_in_a_rolled_back_transaction_is_never_delivered(alice, bob):
    bob_ws = await connect(bob)

    def send_then_fail():
        with transaction.atomic():
            message_send(sender=alice, recipient_username="bob", body="ghost")
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        await sync_to_async(send_then_fail)()
    assert await bob_ws.nothing(0.5)
    assert not await Message.objects.filter(body="ghost").aexists()
    await bob_ws.close()


# --- sync -------------------------------------------------------------------------


async def test_sync_returns_exactly_what_was_missed_oldest_first(alice, bob, carol):
    before = await sync_to_async(message_send)(sender=alice, recipient_username="bob", body="seen")
    missed = []
    for sender, to, body in [(alice, "bob", "a"), (bob, "alice", "b"), (carol, "bob", "c")]:
        missed.append((await sync_to_async(message_send)(sender=sender, recipient_username=to, body=body)).message)
    await sync_to_async(message_send)(sender=alice, recipient_username="carol", body="not for bob")
    bob_ws = await connect(bob)
    await bob_ws.send({"type": "sync", "since": before.message.pk})
    frames = [await bob_ws.recv_type("message") for _ in range(3)]
    assert [f["message"]["id"] for f in frames] == [m.pk for m in missed]
    assert await bob_ws.recv_type("synced") == {"type": "synced", "last_id": missed[-1].pk, "more": False}
    await bob_ws.close()


async def test_sync_pages_with_more(alice, bob, monkeypatch):
    monkeypatch.setattr(selectors, "SYNC_LIMIT", 3)
    ids = [
        (await sync_to_async(message_send)(sender=alice, recipient_username="bob", body=str(i))).message.pk
        for i in range(5)
    ]
    bob_ws = await connect(bob)
    await bob_ws.send({"type": "sync", "since": 0})
    first = [(await bob_ws.recv_type("message"))["message"]["id"] for _ in range(3)]
    assert await bob_ws.recv_type("synced") == {"type": "synced", "last_id": ids[2], "more": True}
    await bob_ws.send({"type": "sync", "since": ids[2]})
    rest = [(await bob_ws.recv_type("message"))["message"]["id"] for _ in range(2)]
    assert await bob_ws.recv_type("synced") == {"type": "synced", "last_id": ids[4], "more": False}
    assert first + rest == ids
    await bob_ws.close()


# --- typing, read, ping -----------------------------------------------------------


async def test_typing_reaches_the_peer(alice, bob):
    # Typing goes to conversation partners only (tests/test_security.py: strangers).
    await sync_to_async(message_send)(sender=bob, recipient_username="alice", body="hi")
    alice_ws, bob_ws = await connect(alice), await connect(bob)
    await alice_ws.send({"type": "typing", "to": "bob"})
    assert await bob_ws.recv_type("typing") == {"type": "typing", "from": "alice"}
    await alice_ws.close()
    await bob_ws.close()


async def test_read_tells_the_peer_and_drops_the_unread_count(alice, bob):
    alice_ws, bob_ws = await connect(alice), await connect(bob)
    ack = await send(bob_ws, "alice", "read me")
    await alice_ws.recv_type("message")
    rows = await sync_to_async(lambda: list(selectors.conversation_list(user=alice)))()
    assert rows[0].unread_count == 1
    await alice_ws.send({"type": "read", "peer": "bob", "up_to": ack["message"]["id"]})
    frame = await bob_ws.recv_type("read")
    assert frame["by"] == "alice" and frame["up_to"] == ack["message"]["id"]
    rows = await sync_to_async(lambda: list(selectors.conversation_list(user=alice)))()
    assert rows[0].unread_count == 0
    assert (await sync_to_async(lambda: list(selectors.conversation_list(user=bob)))())[0].peer_read_up_to == ack[
        "message"
    ]["id"]
    await alice_ws.close()
    await bob_ws.close()


async def test_ping_gets_pong(alice):
    client = await connect(alice)
    await client.send({"type": "ping"})
    assert await client.recv_type("pong") == {"type": "pong"}
    await client.close()


# --- errors keep the connection open -----------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('"a string"', "bad_frame"),
        ({"type": "dance"}, "bad_frame"),
        ({"no": "type"}, "bad_frame"),
        ({"type": "send", "to": "bob"}, "validation"),
        ({"type": "send", "to": "bob", "body": ""}, "validation"),
        ({"type": "send", "to": "bob", "body": "   \n"}, "validation"),
        ({"type": "send", "to": "bob", "body": "x" * 4001}, "validation"),
        ({"type": "send", "to": "bob", "body": 42}, "validation"),
        ({"type": "send", "body": "hi"}, "validation"),
        ({"type": "send", "to": "alice", "body": "me"}, "validation"),
        ({"type": "send", "to": "nobody", "body": "hi"}, "not_found"),
        ({"type": "send", "to": "bob", "body": "hi", "client_id": 7}, "validation"),
        ({"type": "send", "to": "bob", "body": "hi", "client_id": "x" * 65}, "validation"),
        ({"type": "sync"}, "validation"),
        ({"type": "sync", "since": -1}, "validation"),
        ({"type": "sync", "since": "5"}, "validation"),
        ({"type": "typing", "to": "nobody"}, "not_found"),
        ({"type": "typing"}, "validation"),
        ({"type": "read", "peer": "bob", "up_to": "x"}, "validation"),
        ({"type": "read", "peer": "carol", "up_to": 1}, "not_found"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays_open(alice, bob, carol, frame, code):
    client = await connect(alice)
    await client.send(frame)
    error = await client.recv_type("error")
    assert error["code"] == code and error["detail"]
    await client.send({"type": "ping"})
    assert await client.recv_type("pong") == {"type": "pong"}
    assert not await Message.objects.aexists()
    await client.close()


async def test_an_error_names_the_client_id_of_the_failed_send(alice, bob):
    client = await connect(alice)
    await client.send({"type": "send", "to": "nobody", "body": "hi", "client_id": "c-9"})
    assert (await client.recv_type("error"))["client_id"] == "c-9"
    await client.close()


async def test_binary_frames_are_a_bad_frame(alice):
    client = await connect(alice)
    await client.ws.send_to(bytes_data=b"\x00\x01")
    assert (await client.recv_type("error"))["code"] == "bad_frame"
    await client.close()


async def test_a_frame_over_64_kib_closes_with_1009(alice, bob):
    client = await connect(alice)
    await client.send({"type": "send", "to": "bob", "body": "é" * 40000})
    assert await client.ws.receive_output(3) == {"type": "websocket.close", "code": 1009}


async def test_the_rate_limit_answers_rate_limited_with_retry_after(alice, bob, settings):
    settings.CHAT_RATE_LIMIT = (3, 10)
    client = await connect(alice)
    for i in range(3):
        await send(client, "bob", f"ok {i}")
    await client.send({"type": "send", "to": "bob", "body": "too many", "client_id": "late"})
    error = await client.recv_type("error")
    assert error["code"] == "rate_limited" and 1 <= error["retry_after"] <= 10 and error["client_id"] == "late"
    assert await Message.objects.acount() == 3
    await client.close()


# --- presence ---------------------------------------------------------------------


async def test_partners_see_presence_change_when_the_last_tab_closes(alice, bob):
    await sync_to_async(message_send)(sender=alice, recipient_username="bob", body="hi")
    alice_ws = await connect(alice)
    bob_tab1 = await connect(bob)
    assert (await alice_ws.recv_type("presence"))["online"] is True
    bob_tab2 = await connect(bob)
    await bob_tab1.close()
    assert await alice_ws.nothing(0.3, ignore=())
    await bob_tab2.close()
    frame = await alice_ws.recv_type("presence")
    assert frame["user"] == "bob" and frame["online"] is False and frame["last_seen"]
    await alice_ws.close()


async def test_everyone_in_a_conversation_sees_a_user_come_online_and_strangers_do_not(alice, bob, carol):
    for peer in ("bob", "carol"):
        await sync_to_async(message_send)(sender=alice, recipient_username=peer, body="hi")
    stranger = await sync_to_async(UserFactory)(username="stranger")
    watchers = [await connect(user) for user in (bob, carol, stranger)]
    alice_ws = await connect(alice)
    for watcher in watchers[:2]:
        frame = await watcher.recv_type("presence")
        assert frame["user"] == "alice" and frame["online"] is True
    assert await watchers[2].nothing(0.3, ignore=())
    loaded = await sync_to_async(selectors.socket_user)(user_id=alice.pk)
    assert sorted(loaded.peer_ids) == sorted([bob.pk, carol.pk])
    await sync_to_async(type(alice).objects.filter(pk=alice.pk).update)(last_seen=timezone.now())
    loaded = await sync_to_async(selectors.socket_user)(user_id=alice.pk)
    await sync_to_async(alice.refresh_from_db)()
    assert (loaded.username, loaded.is_active, loaded.password) == (alice.username, True, alice.password)
    assert loaded.last_seen == alice.last_seen and loaded.last_seen.tzinfo is not None
    assert (await sync_to_async(selectors.socket_user)(user_id=stranger.pk)).peer_ids == []
    for client in (alice_ws, *watchers):
        await client.close()


async def test_strangers_get_no_presence_frames(alice):
    stranger = await sync_to_async(UserFactory)(username="stranger")
    alice_ws = await connect(alice)
    stranger_ws = await connect(stranger)
    await stranger_ws.close()
    assert await alice_ws.nothing(0.3, ignore=())
    await alice_ws.close()


async def test_many_sockets_do_not_disturb_each_other(alice, bob):
    clients = await asyncio.gather(*(connect(alice) for _ in range(5)))
    await clients[0].send({"type": "ping"})
    assert await clients[0].recv_type("pong")
    for client in clients:
        await client.close()


# --- account state ------------------------------------------------------------------


async def test_a_user_deactivated_while_connected_is_disconnected_at_once(alice):
    tabs = [await connect(alice), await connect(alice)]
    alice.is_active = False
    await sync_to_async(alice.save)()
    for tab in tabs:
        assert await tab.ws.receive_output(3) == {"type": "websocket.close", "code": 4401}


async def test_connections_beyond_the_per_user_cap_are_refused(alice, settings):
    settings.MAX_CONNECTIONS_PER_USER = 2
    tabs = [await connect(alice), await connect(alice)]
    communicator = await raw()
    await communicator.connect()
    await communicator.send_to(text_data=json.dumps({"type": "auth", "token": str(AccessToken.for_user(alice))}))
    assert await communicator.receive_output(3) == {"type": "websocket.close", "code": 4429}
    await tabs[0].close()
    third = await connect(alice)  # room again once a tab closed
    for client in (tabs[1], third):
        await client.close()


async def test_one_send_that_breaks_the_database_does_not_fail_the_others_in_its_batch(alice, bob, monkeypatch):
    from messaging import batching, services

    real = services.message_send_many
    batch_sizes = []

    def fragile(*, requests):
        batch_sizes.append(len(requests))
        if any(r.body == "poison" for r in requests):
            raise RuntimeError("the database refused something in this batch")
        return real(requests=requests)

    monkeypatch.setattr(batching, "message_send_many", fragile)
    batcher = batching.SendBatcher()
    requests = [services.SendRequest(alice, "bob", body) for body in ("fine 0", "poison", "fine 2")]
    outcomes = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    assert batch_sizes[0] == 3  # they were stored together, then one by one
    assert [outcomes[0].message.body, outcomes[2].message.body] == ["fine 0", "fine 2"]
    assert isinstance(outcomes[1], RuntimeError)
    assert await Message.objects.acount() == 2


# --- order across server processes ------------------------------------------------------


async def _stored_events(monkeypatch, sends, *, for_user):
    """Store messages but keep the user's delivery events (one per send), to publish
    them as another process might: late, out of order, or never."""
    from messaging import services

    captured = []
    monkeypatch.setattr(services, "deliver_many", lambda *, items: captured.extend(items))
    for sender, to, body in sends:
        await sync_to_async(message_send)(sender=sender, recipient_username=to, body=body)
    monkeypatch.undo()
    return [(user_ids, event) for user_ids, event in captured if user_ids == [for_user.pk]]


async def _publish(user_ids, event):
    from channels.layers import get_channel_layer

    from messaging.delivery import user_group

    for user_id in user_ids:
        await get_channel_layer().group_send(user_group(user_id), event)


async def test_messages_published_out_of_order_reach_the_socket_in_order(alice, bob, carol, monkeypatch):
    bob_ws = await connect(bob)
    events = await _stored_events(monkeypatch, [(alice, "bob", "first"), (carol, "bob", "second")], for_user=bob)
    for user_ids, event in reversed(events):
        await _publish(user_ids, event)
    received = [(await bob_ws.recv_type("message"))["message"]["body"] for _ in range(2)]
    assert received == ["first", "second"]
    assert await bob_ws.nothing(0.3)
    await bob_ws.close()


async def test_a_message_lost_in_transit_is_filled_in_from_the_database(alice, bob, monkeypatch):
    from messaging import consumers

    monkeypatch.setattr(consumers, "GAP_WAIT_SECONDS", 0.2)
    bob_ws = await connect(bob)
    events = await _stored_events(monkeypatch, [(alice, "bob", "lost"), (alice, "bob", "arrives")], for_user=bob)
    await _publish(*events[1])  # the first one never comes
    received = [(await bob_ws.recv_type("message", timeout=5))["message"]["body"] for _ in range(2)]
    assert received == ["lost", "arrives"]
    await _publish(*events[0])  # arriving after all: not delivered twice
    assert await bob_ws.nothing(0.3)
    await bob_ws.close()


async def test_a_gap_fill_does_not_echo_a_senders_own_message(alice, bob, monkeypatch):
    from messaging import consumers, services

    monkeypatch.setattr(consumers, "GAP_WAIT_SECONDS", 0.2)
    alice_ws = await connect(alice)
    monkeypatch.setattr(services, "deliver_many", lambda *, items: None)  # the event of "mine" is lost
    await send(alice_ws, "bob", "mine")
    monkeypatch.undo()
    monkeypatch.setattr(consumers, "GAP_WAIT_SECONDS", 0.2)
    await sync_to_async(message_send)(sender=bob, recipient_username="alice", body="reply")
    frame = await alice_ws.recv_type("message", timeout=5)
    assert frame["message"]["body"] == "reply"
    assert await alice_ws.nothing(0.5)
    await alice_ws.close()


async def test_a_sync_page_is_also_bounded_in_bytes(alice, bob, monkeypatch, settings):
    from messaging import consumers

    settings.CHAT_RATE_LIMIT = (1000, 10)
    monkeypatch.setattr(consumers, "SYNC_PAGE_BYTES", 10_000)
    ids = [
        (await sync_to_async(message_send)(sender=alice, recipient_username="bob", body="x" * 3000)).message.pk
        for _ in range(6)
    ]
    bob_ws = await connect(bob)
    await bob_ws.send({"type": "sync", "since": 0})
    first = [(await bob_ws.recv_type("message"))["message"]["id"] for _ in range(4)]
    assert await bob_ws.recv_type("synced") == {"type": "synced", "last_id": ids[3], "more": True}
    await bob_ws.send({"type": "sync", "since": ids[3]})
    rest = [(await bob_ws.recv_type("message"))["message"]["id"] for _ in range(2)]
    assert await bob_ws.recv_type("synced") == {"type": "synced", "last_id": ids[5], "more": False}
    assert first + rest == ids
    await bob_ws.close()


# --- after Redis comes back ---------------------------------------------------------


async def test_after_redis_is_back_a_socket_that_missed_a_message_reads_it(alice, bob, monkeypatch):
    """A message whose publish was lost (Redis down) and that no later message follows
    reaches the socket when its process notices Redis is back (messaging.recovery)."""
    from messaging import recovery, services

    bob_client = await connect(bob)
    alice_client = await connect(alice)
    delivered = await send(alice_client, "bob", "published")
    assert (await bob_client.recv_type("message"))["message"]["id"] == delivered["message"]["id"]

    monkeypatch.setattr(services, "deliver_many", lambda **kwargs: None)  # the publish is lost
    lost = await sync_to_async(message_send)(sender=alice, recipient_username="bob", body="lost")
    assert await bob_client.nothing()

    # Both sockets are behind: alice's too, as she sent it from elsewhere (REST, say).
    assert await recovery.catch_up_all(grace=0) == 2
    for client in (bob_client, alice_client):
        frame = await client.recv_type("message")
        assert frame["message"]["id"] == lost.message.pk and frame["message"]["body"] == "lost"
        assert await client.nothing()
    assert await recovery.catch_up_all(grace=0) == 0
    await bob_client.close()
    await alice_client.close()


# --- sends in a row ---------------------------------------------------------------


async def test_sends_in_a_row_are_stored_together_and_answered_in_order(alice, bob, monkeypatch, settings):
    """A socket does not wait for one send's ack before reading its next frame."""
    from messaging import batching

    settings.CHAT_RATE_LIMIT = (1000, 10)
    real = batching.message_send_many
    batch_sizes = []
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    def counting(*, requests):
        batch_sizes.append(len(requests))
        if len(batch_sizes) == 1:  # hold the first batch until every frame is in
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)
        return real(requests=requests)

    monkeypatch.setattr(batching, "message_send_many", counting)
    alice_ws, bob_ws = await connect(alice), await connect(bob)
    frames = [{"type": "send", "to": "bob", "body": f"m{i}", "client_id": f"c{i}"} for i in range(10)]
    frames.insert(5, {"type": "send", "to": "nobody", "body": "lost", "client_id": "bad"})
    for frame in frames:
        await alice_ws.send(frame)
    await alice_ws.send({"type": "ping"})
    await asyncio.sleep(0.3)
    gate.set()

    answers = [await alice_ws.recv() for _ in range(12)]
    assert [a.get("client_id") for a in answers[:11]] == [f["client_id"] for f in frames]
    assert answers[5] == {**answers[5], "type": "error", "code": "not_found"}
    assert answers[11] == {"type": "pong"}  # after every send before it was answered
    acked = [a["message"] for a in answers[:11] if a["type"] == "ack"]
    assert [m["body"] for m in acked] == [f"m{i}" for i in range(10)]
    assert [m["id"] for m in acked] == sorted(m["id"] for m in acked)
    assert batch_sizes == [1, 10]  # the first alone, the other ten together
    received = [(await bob_ws.recv_type("message"))["message"] for _ in range(10)]
    assert received == acked
    await alice_ws.close()
    await bob_ws.close()


async def test_a_socket_with_too_many_unanswered_sends_reads_no_further(alice, bob, monkeypatch, settings):
    from messaging import batching, consumers

    settings.CHAT_RATE_LIMIT = (1000, 10)
    monkeypatch.setattr(consumers, "MAX_UNANSWERED_SENDS", 3)
    real = batching.message_send_many
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    batch_sizes = []

    def held(*, requests):
        batch_sizes.append(len(requests))
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)
        return real(requests=requests)

    monkeypatch.setattr(batching, "message_send_many", held)
    alice_ws = await connect(alice)
    for i in range(6):
        await alice_ws.send({"type": "send", "to": "bob", "body": f"m{i}", "client_id": f"c{i}"})
    await asyncio.sleep(0.3)
    # One batch on its way, two sends queued: the fourth frame is not read yet.
    assert batch_sizes == [1]
    assert len(batching.send_batcher.waiting) == 2
    gate.set()
    acks = [await alice_ws.recv_type("ack") for _ in range(6)]
    assert [a["client_id"] for a in acks] == [f"c{i}" for i in range(6)]
    await alice_ws.close()
