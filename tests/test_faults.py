"""Faults survived, with real processes killed by PID: a web process SIGKILLed under
load, Redis restarted under load, PostgreSQL gone mid-send, commits out of id order
across processes, a client that never reads.

The machine's PostgreSQL and Redis are shared: the Redis and PostgreSQL faults happen
to private instances started here (tests/faults_support.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db.models import Count, Q

from accounts.tests.factories import UserFactory
from messaging.models import Conversation, Message
from messaging.services import message_send
from tests.faults_support import (
    LiveSocket,
    PrivatePostgres,
    PrivateRedis,
    Sender,
    eventually,
    http_json,
    open_stalled_socket,
    rss_kib,
    token_for,
)
from tests.procs import DaphneServer, free_port, require_stack, running
from tests.procs import test_database_url as database_url

pytestmark = [pytest.mark.stack, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PRESENCE_TIMEOUT = 2
SWEEP_INTERVAL = 1  # max(1, PRESENCE_TIMEOUT / 4), messaging.presence_events
STALLED_TABS = 4
REDIS_DOWN_SECONDS = 3


@pytest.fixture
def server_env():
    # Redis pub/sub channels are shared by every database number: a prefix of this
    # test's own keeps other test runs' processes from hearing ours.
    prefix = f"faults.{os.getpid()}.{free_port()}"

    def env(**extra: str) -> dict[str, str]:
        return {
            "CHAT_RATE_LIMIT": "100000/1",
            "PRESENCE_TIMEOUT_SECONDS": str(PRESENCE_TIMEOUT),
            "CHANNEL_LAYER_PREFIX": prefix,
            **extra,
        }

    return env


def _page_ids(user):
    """What a `sync` page of `user` from `since` up to `last_id` holds, from PostgreSQL."""

    @sync_to_async
    def page_ids(since: int, last_id: int) -> list[int]:
        mine = Q(sender=user) | Q(recipient=user)
        return list(
            Message.objects.filter(mine, id__gt=since, id__lte=last_id).order_by("id").values_list("id", flat=True)
        )

    return page_ids


@sync_to_async
def _stored(*, sender_ids: list[int], recipient) -> dict[int, dict]:
    return {
        m["id"]: m
        for m in Message.objects.filter(sender_id__in=sender_ids, recipient=recipient).values(
            "id", "sender_id", "client_id"
        )
    }


@sync_to_async
def _duplicate_client_ids(sender_ids: list[int]) -> list[dict]:
    return list(
        Message.objects.filter(sender_id__in=sender_ids)
        .values("sender_id", "client_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )


def _assert_every_ack_stored_once(senders: list[Sender], stored: dict[int, dict]) -> None:
    by_client_id = {m["client_id"]: m["id"] for m in stored.values()}
    for sender in senders:
        assert sender.conflicting_acks == []
        assert len(sender.acked) == sender.count
        for client_id, message in sender.acked.items():
            assert by_client_id.get(client_id) == message["id"], client_id
    assert len(stored) == sum(s.count for s in senders)


async def _status(url: str, expected: int) -> bool:
    return (await sync_to_async(http_json)(url))[0] == expected


async def _wait_until_seen(ids: set[int], seen, timeout: float) -> set[int]:
    """The ids still missing after waiting up to `timeout` for `seen()` to cover them."""
    await eventually(lambda: not ids - seen(), timeout=timeout)
    return ids - seen()


async def test_clients_of_a_killed_web_process_lose_and_duplicate_nothing(server_env, bob, carol):
    require_stack()
    senders_users = [await sync_to_async(UserFactory)(username=f"sender{i}") for i in range(3)]
    sender_ids = [u.pk for u in senders_users]
    # carol shares a conversation with bob: bob is told when she goes offline.
    await sync_to_async(message_send)(sender=carol, recipient_username="bob", body="hello")
    survivor, doomed = DaphneServer(**server_env()), DaphneServer(**server_env())
    with running(survivor, doomed):
        bob_stays = await LiveSocket.open(survivor.ws_url, token_for(bob))
        bob_moves = await LiveSocket.open(doomed.ws_url, token_for(bob))
        carol_ws = await LiveSocket.open(doomed.ws_url, token_for(carol))
        senders = [Sender(token_for(u), "bob", u.username, 150) for u in senders_users]
        alive = {"url": doomed.ws_url}
        runs = [asyncio.create_task(s.run(lambda: alive["url"], limit=60)) for s in senders]

        assert await eventually(lambda: sum(len(s.acked) for s in senders) >= 120, timeout=30, every=0.005)
        alive["url"] = survivor.ws_url
        doomed.kill()
        killed_at = time.monotonic()
        acked_at_kill = sum(len(s.acked) for s in senders)
        acked_before_kill = {c for s in senders for c in s.acked}

        # carol's connection is gone without a close: her presence expires.
        offline = await bob_stays.wait_for(
            lambda f: f["type"] == "presence" and f["user"] == "carol" and not f["online"],
            timeout=PRESENCE_TIMEOUT + SWEEP_INTERVAL + 3,
        )
        carol_offline_after = time.monotonic() - killed_at
        assert offline["last_seen"]

        # bob's tab on the dead process reconnects to the survivor and syncs from the
        # newest message it saw.
        await bob_moves.closed.wait()
        seen_before = bob_moves.live_messages()
        since = max((m["id"] for m in seen_before), default=bob_moves.ready["last_message_id"])
        bob_back = await LiveSocket.open(survivor.ws_url, token_for(bob))
        synced = await bob_back.sync_all(since, _page_ids(bob))

        await asyncio.gather(*runs)
        stored = await _stored(sender_ids=sender_ids, recipient=bob)
        expected = set(stored)
        assert await _duplicate_client_ids(sender_ids) == []
        _assert_every_ack_stored_once(senders, stored)

        def moved_tab_ids() -> list[int]:
            return [m["id"] for m in seen_before + bob_back.live_messages() + synced if m["sender"] != "carol"]

        missing_moved = await _wait_until_seen(expected, lambda: set(moved_tab_ids()), 15)
        missing_stayed = await _wait_until_seen(expected, lambda: {m["id"] for m in bob_stays.live_messages()}, 15)
        stayed_ids = [m["id"] for m in bob_stays.live_messages() if m["sender"] != "carol"]
        moved_counts = Counter(moved_tab_ids())
        overlap = {i for i, n in moved_counts.items() if n > 1}
        live_twice = [i for i, n in Counter(m["id"] for m in seen_before + bob_back.live_messages()).items() if n > 1]
        print(
            f"\nweb process killed after {acked_at_kill} acks; {len(expected)} messages stored; "
            f"reconnects {[s.reconnects for s in senders]}, errors {[len(s.errors) for s in senders]}; "
            f"moved tab: {len(seen_before)} live before the kill, {len(bob_back.live_messages())} live after, "
            f"{len(synced)} synced from {since}, {len(overlap)} both live and synced; "
            f"staying tab: {len(stayed_ids)} live, missing {sorted(missing_stayed)} (acknowledged before the kill: "
            f"{sorted(i for i in missing_stayed if stored[i]['client_id'] in acked_before_kill)}); "
            f"carol offline after {carol_offline_after:.1f} s"
        )
        assert missing_moved == set()
        assert live_twice == []
        # Sync may repeat a live message only when it arrived after `since`.
        assert all(i > since for i in overlap)
        assert len(stayed_ids) == len(set(stayed_ids))
        # The staying tab is never told to sync: what the killed process committed but
        # did not get to publish reaches it when the next message to bob shows the gap.
        assert missing_stayed == set()

        for socket in (bob_stays, bob_back):
            await socket.close()
        del carol_ws


async def _burst_then_kill(survivor: DaphneServer, doomed: DaphneServer, bob) -> tuple[LiveSocket, set[int]]:
    """Many sockets send to bob through `doomed`, which is SIGKILLed right after 300
    acks: big group commits, each acknowledged at once, while the process publishes
    the messages one after the other. Returns bob's socket on `survivor` and the ids
    acknowledged before the kill."""
    users = [await sync_to_async(UserFactory)(username=f"burst{i}") for i in range(16)]
    bob_ws = await LiveSocket.open(survivor.ws_url, token_for(bob))
    senders = [Sender(token_for(u), "bob", u.username, 100, window=30) for u in users]
    runs = [asyncio.create_task(s.run(lambda: doomed.ws_url, limit=30)) for s in senders]
    assert await eventually(lambda: sum(len(s.acked) for s in senders) >= 300, timeout=30, every=0.001)
    doomed.kill()
    for run in runs:
        run.cancel()
    return bob_ws, {m["id"] for s in senders for m in s.acked.values()}


def _not_live(socket: LiveSocket, ids: set[int]) -> set[int]:
    return ids - {m["id"] for m in socket.live_messages()}


async def test_a_message_acknowledged_just_before_its_process_is_killed_still_reaches_the_other_sockets(
    server_env, bob
):
    require_stack()
    survivor, doomed = DaphneServer(**server_env()), DaphneServer(**server_env())
    with running(survivor, doomed):
        bob_ws, acked_ids = await _burst_then_kill(survivor, doomed, bob)
        await eventually(lambda: not _not_live(bob_ws, acked_ids), timeout=5)
        missing = _not_live(bob_ws, acked_ids)
        print(
            f"\n{len(acked_ids)} acknowledged before the kill; waiting up to 5 s, bob's socket on the other process "
            f"still lacks {len(missing)} of them: {sorted(missing)} "
            f"(acknowledged ids {min(acked_ids)}..{max(acked_ids)})"
        )
        assert missing == set()
        await bob_ws.close()


async def test_messages_a_killed_process_did_not_publish_reach_the_other_sockets_with_the_next_message(
    server_env, alice, bob
):
    require_stack()
    survivor, doomed = DaphneServer(**server_env()), DaphneServer(**server_env())
    with running(survivor, doomed):
        bob_ws, acked_ids = await _burst_then_kill(survivor, doomed, bob)
        await asyncio.sleep(1)
        lacking = _not_live(bob_ws, acked_ids)
        alice_ws = await LiveSocket.open(survivor.ws_url, token_for(alice))
        await alice_ws.send({"type": "send", "to": "bob", "body": "next", "client_id": "next"})
        ack = await alice_ws.wait_for(lambda f: f["type"] == "ack", timeout=10)
        expected = await _page_ids(bob)(0, ack["message"]["id"])
        await eventually(lambda: not _not_live(bob_ws, set(expected)), timeout=10)
        got = [m["id"] for m in bob_ws.live_messages()]
        print(
            f"\n{len(acked_ids)} acknowledged before the kill, {len(lacking)} of them not live 1 s later; after "
            f"one more message to bob, missing {sorted(set(expected) - set(got))}"
        )
        assert sorted(got) == expected
        assert len(got) == len(set(got))
        for socket in (alice_ws, bob_ws):
            await socket.close()


async def test_after_a_redis_restart_under_load_nothing_acknowledged_is_lost_and_delivery_resumes(
    server_env, alice, bob, carol
):
    require_stack()
    private_redis = PrivateRedis()
    a = DaphneServer(**server_env(REDIS_URL=private_redis.url))
    b = DaphneServer(**server_env(REDIS_URL=private_redis.url))
    with running(private_redis, a, b):
        # bob only listens: his socket has no reason to notice the restart itself.
        bob_ws = await LiveSocket.open(b.ws_url, token_for(bob), keepalive=None)
        senders = [
            Sender(token_for(alice), "bob", "alice", 200),
            Sender(token_for(carol), "bob", "carol", 200),
        ]
        runs = [
            asyncio.create_task(senders[0].run(lambda: a.ws_url, limit=60)),
            asyncio.create_task(senders[1].run(lambda: b.ws_url, limit=60)),
        ]
        assert await eventually(lambda: sum(len(s.acked) for s in senders) >= 100, timeout=30, every=0.005)
        acked_before = sum(len(s.acked) for s in senders)
        private_redis.kill()
        await asyncio.sleep(REDIS_DOWN_SECONDS)
        acked_while_down = sum(len(s.acked) for s in senders) - acked_before
        private_redis.start()
        await asyncio.gather(*runs)

        stored = await _stored(sender_ids=[alice.pk, carol.pk], recipient=bob)
        assert await _duplicate_client_ids([alice.pk, carol.pk]) == []
        _assert_every_ack_stored_once(senders, stored)
        error_codes = Counter(e["code"] for s in senders for e in s.errors)
        print(
            f"\nRedis killed after {acked_before} acks, back {REDIS_DOWN_SECONDS} s later, "
            f"{acked_while_down} acks meanwhile; errors {dict(error_codes)}; "
            f"reconnects {[s.reconnects for s in senders]}; sends answered by nothing for 10 s "
            f"{[s.silences for s in senders]}; bob's socket still open: {not bob_ws.closed.is_set()}; "
            f"bob saw {len({m['id'] for m in bob_ws.live_messages()})} of {len(stored)} live"
        )
        # PostgreSQL is the source of truth: sends are stored while Redis is down.
        assert acked_while_down > 0
        assert error_codes == Counter()
        assert [s.silences for s in senders] == [0, 0]
        # Errors keep the connection open: nobody had to reconnect.
        assert [s.reconnects for s in senders] == [0, 0]

        # Without restarting anything: a new message reaches bob's socket live, on the
        # other process (once that process has subscribed again: pub/sub keeps nothing
        # for a subscriber that is reconnecting, and the first message after it also
        # brings, by gap fill, those published while Redis was down); the history API
        # answers; presence is counted again.
        assert not bob_ws.closed.is_set()
        alice_ws = await LiveSocket.open(a.ws_url, token_for(alice))
        await alice_ws.send({"type": "send", "to": "bob", "body": "after the restart", "client_id": "after"})
        ack = await alice_ws.wait_for(lambda f: f["type"] == "ack", timeout=10)
        live = await bob_ws.wait_for(
            lambda f: f["type"] == "message" and f["message"]["id"] == ack["message"]["id"], timeout=15
        )
        assert live["message"] == ack["message"]
        assert {m["id"] for m in bob_ws.live_messages()} == set(stored) | {ack["message"]["id"]}
        await alice_ws.close()
        start = len(bob_ws.frames)
        alice_ws = await LiveSocket.open(a.ws_url, token_for(alice))
        await bob_ws.wait_for(
            lambda f: f["type"] == "presence" and f["user"] == "alice" and f["online"], timeout=10, start=start
        )
        status, page = await sync_to_async(http_json)(
            f"{a.url}/api/conversations/bob/messages/", token=token_for(alice)
        )
        assert status == 200 and page["results"][0] == ack["message"]
        status, users = await sync_to_async(http_json)(f"{b.url}/api/users/?search=alice", token=token_for(bob))
        assert status == 200 and users["results"][0]["online"] is True
        for socket in (alice_ws, bob_ws):
            await socket.close()


async def _send_until_acked(socket: LiveSocket, *, to: str, client_id: str, timeout: float) -> dict:
    """Send (body: the client id) and resend after each `server_error`, until acked."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        start = len(socket.frames)
        await socket.send({"type": "send", "to": to, "body": client_id, "client_id": client_id})
        answer = await socket.wait_for(
            lambda f: f["type"] in ("ack", "error") and f.get("client_id") == client_id, timeout=timeout, start=start
        )
        if answer["type"] == "ack":
            return answer
        assert answer["code"] == "server_error", answer
        assert asyncio.get_running_loop().time() < deadline, f"{client_id} still refused after {timeout} s"
        await asyncio.sleep(0.2)


async def test_a_send_while_postgresql_is_down_gets_an_error_and_the_service_recovers(server_env):
    require_stack()
    database = PrivatePostgres()
    try:
        database.start()
        await sync_to_async(database.create_and_migrate)()
        server = DaphneServer(
            **server_env(DATABASE_URL=database.url, THROTTLE_RATES="login=1000/min,register=1000/hour")
        )
        with running(server):
            tokens = {}
            for name in ("alice", "bob"):
                credentials = {"username": name, "password": "a-long-enough-password-9"}
                status, _ = await sync_to_async(http_json)(f"{server.url}/api/auth/register/", body=credentials)
                assert status == 201
                status, pair = await sync_to_async(http_json)(f"{server.url}/api/auth/token/", body=credentials)
                tokens[name] = pair["access"]
            alice_ws = await LiveSocket.open(server.ws_url, tokens["alice"])
            bob_ws = await LiveSocket.open(server.ws_url, tokens["bob"])
            await alice_ws.send({"type": "send", "to": "bob", "body": "before", "client_id": "before"})
            await alice_ws.wait_for(lambda f: f["type"] == "ack", timeout=10)

            # A steady stream of sends: PostgreSQL goes away in the middle of it.
            start = len(alice_ws.frames)

            def answers() -> dict[str, list[dict]]:
                found: dict[str, list[dict]] = {}
                for frame in alice_ws.frames[start:]:
                    if frame["type"] in ("ack", "error"):
                        found.setdefault(frame["client_id"], []).append(frame)
                return found

            async def stream() -> None:
                for i in range(40):
                    await alice_ws.send({"type": "send", "to": "bob", "body": f"m{i}", "client_id": f"m{i}"})
                    await asyncio.sleep(0.02)

            streaming = asyncio.create_task(stream())
            assert await eventually(lambda: len(answers()) >= 5, timeout=10, every=0.005)
            await sync_to_async(database.stop)()
            await streaming
            await alice_ws.send({"type": "send", "to": "bob", "body": "down", "client_id": "down"})
            client_ids = [f"m{i}" for i in range(40)] + ["down"]
            await eventually(lambda: len(answers()) == len(client_ids), timeout=15)
            got = answers()
            assert sorted(got) == sorted(client_ids)
            assert all(len(frames) == 1 for frames in got.values())
            down = got["down"][0]
            assert down["type"] == "error" and down["code"] == "server_error" and down["client_id"] == "down"
            assert not alice_ws.closed.is_set()
            status, _ = await sync_to_async(http_json)(f"{server.url}/healthz")
            assert status == 503

            await sync_to_async(database.start)()
            assert await eventually(lambda: _status(f"{server.url}/healthz", 200), timeout=15, every=0.2)
            # The client resends what failed, as a client does until it is acknowledged
            # (for a moment after PostgreSQL is back a send may still fail at once);
            # the same client ids: each stored once.
            failed = [c for c, frames in got.items() if frames[0]["type"] == "error"]
            for client_id in [*failed, "after"]:
                await _send_until_acked(alice_ws, to="bob", client_id=client_id, timeout=15)
            rows = await sync_to_async(database.query)(
                "SELECT client_id, count(*) FROM messaging_message GROUP BY client_id ORDER BY client_id"
            )
            acked = [c for c, frames in got.items() if frames[0]["type"] == "ack"]
            print(f"\nPostgreSQL stopped during a stream of 40 sends: {len(acked)} acked, {len(failed)} errors")
            assert dict(rows) == {c: 1 for c in ["before", "after", *client_ids]}
            await bob_ws.wait_for(lambda f: f["type"] == "message" and f["message"]["client_id"] == "after", timeout=10)
            for socket in (alice_ws, bob_ws):
                await socket.close()
    finally:
        database.destroy()


async def test_a_client_that_reconnects_at_random_moments_under_concurrent_senders_misses_nothing(server_env, bob):
    require_stack()
    seed = random.randrange(2**32)
    chance = random.Random(seed)
    users = [await sync_to_async(UserFactory)(username=f"peer{i}") for i in range(6)]
    a, b = DaphneServer(**server_env()), DaphneServer(**server_env())
    with running(a, b):
        connections: list[LiveSocket] = []
        synced: list[dict] = []
        sinces: list[int] = []
        server = a
        bob_ws = await LiveSocket.open(server.ws_url, token_for(bob))
        connections.append(bob_ws)
        senders = [Sender(token_for(u), "bob", u.username, 80) for u in users]
        runs = [
            asyncio.create_task(s.run(lambda url=(a, b)[i % 2].ws_url: url, limit=60)) for i, s in enumerate(senders)
        ]
        # bob drops his connection at random moments and comes back to the other
        # process, syncing from the newest message he saw.
        for _ in range(5):
            await asyncio.sleep(chance.uniform(0.2, 1.6))
            await bob_ws.close()
            seen = [m["id"] for c in connections for m in c.live_messages()] + [m["id"] for m in synced]
            since = max(seen, default=bob_ws.ready["last_message_id"])
            server = b if server is a else a
            bob_ws = await LiveSocket.open(server.ws_url, token_for(bob))
            connections.append(bob_ws)
            sinces.append(since)
            synced.extend(await bob_ws.sync_all(since, _page_ids(bob)))
        await asyncio.gather(*runs)

        stored = await _stored(sender_ids=[u.pk for u in users], recipient=bob)
        _assert_every_ack_stored_once(senders, stored)

        def seen_ids() -> list[int]:
            return [m["id"] for c in connections for m in c.live_messages()] + [m["id"] for m in synced]

        missing = await _wait_until_seen(set(stored), lambda: set(seen_ids()), 15)
        counts = Counter(seen_ids())
        live_twice = [i for i, n in Counter(m["id"] for c in connections for m in c.live_messages()).items() if n > 1]
        late = 0  # live messages older than one already seen live on the same connection
        for connection in connections:
            newest = 0
            for message in connection.live_messages():
                late += message["id"] < newest
                newest = max(newest, message["id"])
        print(
            f"\nseed {seed}: {len(stored)} messages from 6 senders on two processes; bob reconnected 5 times, "
            f"synced from {sinces}: {len(synced)} synced, {sum(n > 1 for n in counts.values())} both live and "
            f"synced; live messages older than one seen before on the same connection: {late}; "
            f"missing {sorted(missing)}"
        )
        assert missing == set()
        assert live_twice == []
        await bob_ws.close()


def _blocked_by(monitor: psycopg.Connection, pid: int) -> list[int]:
    """The backends waiting for a lock that backend `pid` holds."""
    rows = monitor.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,))
    return [row[0] for row in rows]


async def test_a_message_whose_id_was_drawn_first_but_committed_late_is_not_skipped_by_live_delivery_or_sync(
    server_env, bob, carol
):
    """carol's send to bob draws its id and inserts its row, then its transaction is
    held open (a row lock it needs is taken here). dave's send to bob, on another
    process, comes after it: it draws a higher id. Were dave's message committed and
    delivered first, a tab of bob's that saw it would sync `since` its id and never
    get carol's, and a tab that stays would drop carol's as older than what it saw.
    The per-user locks (messaging_store_messages) keep dave's send waiting until
    carol's commits: both tabs get both."""
    require_stack()
    dave = await sync_to_async(UserFactory)(username="dave")
    # Both conversations exist: the held transaction must not be creating its own.
    for sender in (carol, dave):
        await sync_to_async(message_send)(sender=sender, recipient_username="bob", body="before")
    conversation = await sync_to_async(Conversation.objects.get)(
        user_low=min(bob, carol, key=lambda u: u.pk).pk, user_high=max(bob, carol, key=lambda u: u.pk).pk
    )
    a, b = DaphneServer(**server_env()), DaphneServer(**server_env())
    with (
        running(a, b),
        psycopg.connect(database_url()) as blocker,
        psycopg.connect(database_url(), autocommit=True) as monitor,
    ):
        bob_stays = await LiveSocket.open(a.ws_url, token_for(bob))
        bob_leaves = await LiveSocket.open(b.ws_url, token_for(bob))
        carol_ws = await LiveSocket.open(a.ws_url, token_for(carol))
        dave_ws = await LiveSocket.open(b.ws_url, token_for(dave))
        # carol's transaction will wait for this lock when it moves the conversation's
        # last message, after its message id was drawn and its row inserted (the
        # insert's foreign key check only takes a key-share lock, which this allows).
        blocker.execute("SELECT 1 FROM messaging_conversation WHERE id = %s FOR NO KEY UPDATE", (conversation.pk,))
        blocker_pid = blocker.info.backend_pid
        try:
            await carol_ws.send({"type": "send", "to": "bob", "body": "drawn first", "client_id": "first"})
            assert await eventually(lambda: _blocked_by(monitor, blocker_pid), timeout=10)
            [carol_pid] = _blocked_by(monitor, blocker_pid)

            await dave_ws.send({"type": "send", "to": "bob", "body": "drawn second", "client_id": "second"})

            def dave_acked() -> bool:
                return any(f["type"] == "ack" for f in dave_ws.frames)

            # Either dave's send waits behind carol's transaction, or (without the user
            # locks) it is committed, acknowledged and delivered meanwhile.
            assert await eventually(lambda: dave_acked() or _blocked_by(monitor, carol_pid), timeout=10)
            acked_while_held = dave_acked()
            if acked_while_held:
                await asyncio.sleep(0.5)  # its live delivery to bob's tabs
            # This tab goes away before carol's message commits, and comes back later.
            await bob_leaves.close()
            seen = bob_leaves.live_messages()
            since = max((m["id"] for m in seen), default=bob_leaves.ready["last_message_id"])
        finally:
            blocker.rollback()

        carol_ack = await carol_ws.wait_for(lambda f: f["type"] == "ack", timeout=10)
        dave_ack = await dave_ws.wait_for(lambda f: f["type"] == "ack", timeout=10)
        first, second = carol_ack["message"]["id"], dave_ack["message"]["id"]
        bob_back = await LiveSocket.open(a.ws_url, token_for(bob))
        synced = await bob_back.sync_all(since, _page_ids(bob))
        await eventually(lambda: {first, second} <= {m["id"] for m in bob_stays.live_messages()}, timeout=5)
        stayed = [m["id"] for m in bob_stays.live_messages()]
        print(
            f"\ncarol's message {first} held uncommitted; dave's {second} acknowledged meanwhile: {acked_while_held}; "
            f"the tab that left saw {[m['id'] for m in seen]} and synced from {since}: {[m['id'] for m in synced]}; "
            f"the tab that stayed got {stayed}"
        )
        assert first < second
        left_and_came_back = [m["id"] for m in seen + synced]
        assert sorted(left_and_came_back) == [first, second]
        assert stayed == [first, second]
        for socket in (bob_stays, bob_back, carol_ws, dave_ws):
            await socket.close()


async def test_a_client_that_never_reads_does_not_hold_up_the_others_and_recovers_with_sync(
    server_env, alice, bob, carol
):
    require_stack()
    dave, erin = [await sync_to_async(UserFactory)(username=name) for name in ("dave", "erin")]
    server = DaphneServer(**server_env())
    with running(server):
        # bob has a few tabs that never read: what the server holds for them adds up.
        stalled = [await open_stalled_socket(server.ws_url, token_for(bob)) for _ in range(STALLED_TABS)]
        ready = stalled[0][1]
        assert all(r["type"] == "ready" for _, r in stalled)
        alice_ws = await LiveSocket.open(server.ws_url, token_for(alice))
        erin_ws = await LiveSocket.open(server.ws_url, token_for(erin))

        async def probe(tag: str, count: int, *, during: list[asyncio.Task] = ()) -> list[float]:
            """alice and erin write to each other in turn, one message at a time: seconds
            until the other one has each. At least `count` messages, and on until the
            tasks `during` are done."""
            latencies = []
            index = 0
            while index < count or not all(task.done() for task in during):
                sender, receiver, to = (alice_ws, erin_ws, "erin") if index % 2 == 0 else (erin_ws, alice_ws, "alice")
                body = f"{tag} {index}"
                started = time.monotonic()
                await sender.send({"type": "send", "to": to, "body": body, "client_id": f"{tag}-{index}"})
                await receiver.wait_for(
                    lambda f, body=body: f["type"] == "message" and f["message"]["body"] == body, timeout=10
                )
                latencies.append(time.monotonic() - started)
                index += 1
                await asyncio.sleep(0.05)
            return latencies

        def received(socket: LiveSocket, tag: str) -> list[str]:
            return [m["body"] for m in socket.live_messages() if m["body"].startswith(f"{tag} ")]

        quiet = await probe("quiet", 20)
        rss_before = rss_kib(server.pid)
        flood = [Sender(token_for(u), "bob", u.username, 300, window=8) for u in (carol, dave)]
        for sender in flood:
            # Text that does not compress: what is buffered is what was sent.
            sender.frame = lambda i, s=sender: {
                "type": "send",
                "to": "bob",
                "body": "".join(chr(random.randint(0x4E00, 0x9FFF)) for _ in range(3990)),
                "client_id": f"{s.prefix}-{i}",
            }
        flood_started = time.monotonic()
        runs = [asyncio.create_task(s.run(lambda: server.ws_url, limit=90)) for s in flood]
        during = await probe("busy", 20, during=runs)
        await asyncio.gather(*runs)
        flood_seconds = time.monotonic() - flood_started
        rss_flooded = rss_kib(server.pid)
        after = await probe("after", 10)

        for ws, _ in stalled:
            ws.transport.abort()
        await asyncio.sleep(2)
        rss_released = rss_kib(server.pid)
        bob_back = await LiveSocket.open(server.ws_url, token_for(bob))
        recovered = await bob_back.sync_all(ready["last_message_id"], _page_ids(bob))
        stored = await _stored(sender_ids=[carol.pk, dave.pk], recipient=bob)
        flood_bytes = sum(len(m["body"].encode()) for m in recovered)

        def summary(latencies: list[float]) -> str:
            ordered = sorted(latencies)
            median, slowest = ordered[len(ordered) // 2], ordered[-1]
            return f"{len(ordered)} messages, median {median * 1000:.0f} ms, max {slowest * 1000:.0f} ms"

        print(
            f"\n{len(stored)} messages ({flood_bytes / 2**20:.1f} MiB of UTF-8) flooded in {flood_seconds:.1f} s "
            f"to {STALLED_TABS} sockets that never read; daphne RSS {rss_before / 1024:.1f} MiB before, "
            f"{rss_flooded / 1024:.1f} MiB after the flood, "
            f"{rss_released / 1024:.1f} MiB 2 s after those clients were cut; alice<->erin latency quiet "
            f"{summary(quiet)}, during the flood {summary(during)}, after {summary(after)}"
        )
        assert len(stored) == 600
        assert [m["id"] for m in recovered] == sorted(stored)
        # Meanwhile alice and erin chatted as if nothing happened: each of their
        # messages arrived, once, in order, within 2 s (generous: not a benchmark).
        assert max(during) < 2.0, summary(during)
        for tag, count in (("quiet", len(quiet)), ("busy", len(during)), ("after", len(after))):
            assert received(erin_ws, tag) == [f"{tag} {i}" for i in range(0, count, 2)]
            assert received(alice_ws, tag) == [f"{tag} {i}" for i in range(1, count, 2)]
        # Each stalled socket is cut once WS_SEND_BUFFER_LIMIT_BYTES (1 MiB) wait for it:
        # the flood (about 27 MiB towards them) must not pile up in the server.
        assert rss_flooded - rss_before < 12 * 1024, "daphne buffered the flood for clients that never read"
        for socket in (alice_ws, erin_ws, bob_back):
            await socket.close()
