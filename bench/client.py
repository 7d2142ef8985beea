"""The load client: one asyncio process, `websockets` for the sockets and aiohttp for
the REST history, recording every frame it sends and receives so that the checks in
`bench.checks` can prove what was lost, duplicated or reordered.

It knows nothing of Django: users arrive with their access tokens already minted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

now = time.perf_counter
dumps = json.dumps
loads = json.loads

# Frames up to the contract's 64 KiB, plus sync batches.
MAX_FRAME = 4 * 1024 * 1024
FILLER = "The quick brown fox jumps over the lazy dog. " * 2


@dataclass(eq=False)
class User:
    index: int
    pk: int
    username: str
    token: str
    peers: list[User] = field(default_factory=list)
    sockets: list[Socket] = field(default_factory=list)


@dataclass(eq=False)
class Socket:
    index: int
    user: User
    url: str
    ws: ClientConnection | None = None
    # (client_id, message id) of every `message` frame, in arrival order.
    received: list[tuple[str, int | None]] = field(default_factory=list)
    reader: asyncio.Task | None = None
    # Set when the server closed the socket before the client did: "<code> <reason>".
    closed_by_server: str | None = None
    next_seq: int = 0


@dataclass(eq=False)
class Sent:
    client_id: str
    sender: User
    recipient: User
    socket: Socket
    seq: int
    phase: Phase
    sent_at: float
    expected: int  # `message` frames due: every socket of both users but the sending one
    acked_at: float | None = None
    message_id: int | None = None
    error: str | None = None
    deliveries: int = 0
    done: bool = False


@dataclass(eq=False)
class Phase:
    name: str
    sent: int = 0
    completed: int = 0
    sending_done: bool = False
    started_at: float = 0.0
    sending_finished_at: float = 0.0
    last_delivery_at: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def check_finished(self) -> None:
        if self.sending_done and self.completed >= self.sent:
            self.finished.set()


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def latency_summary(values: list[float]) -> dict:
    """Milliseconds."""
    return {
        "count": len(values),
        "p50_ms": _ms(percentile(values, 0.50)),
        "p95_ms": _ms(percentile(values, 0.95)),
        "p99_ms": _ms(percentile(values, 0.99)),
        "max_ms": _ms(max(values) if values else None),
    }


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class ChatClient:
    def __init__(self, run_tag: str) -> None:
        # Client ids are unique per run, so that the database check can tell runs apart.
        self.run_tag = run_tag
        self.sent: dict[str, Sent] = {}
        self.users: list[User] = []
        self.sockets: list[Socket] = []
        self.foreign_frames = 0
        self.error_frames: dict[str, int] = {}
        self.closing = False

    # --- connecting ------------------------------------------------------------------

    async def open(self, url: str, token: str, timeout: float = 20) -> tuple[ClientConnection, dict]:
        ws = await connect(
            url,
            compression=None,
            proxy=None,
            max_size=MAX_FRAME,
            max_queue=None,
            open_timeout=timeout,
            ping_interval=None,
            close_timeout=2,
        )
        try:
            await ws.send(dumps({"type": "auth", "token": token}))
            async with asyncio.timeout(timeout):
                while True:
                    frame = loads(await ws.recv())
                    if frame.get("type") == "ready":
                        return ws, frame
        except BaseException:
            await ws.close()
            raise

    async def connect_users(
        self, users: list[User], server_urls: list[str], extra_socket_every: int, concurrency: int = 50
    ) -> None:
        """One socket per user on server `index % n`; every `extra_socket_every`-th user
        has a second one on the next server, so that delivery to several sockets of one
        user (and across processes) is checked too."""
        self.users = users
        for user in users:
            homes = [user.index % len(server_urls)]
            if extra_socket_every and user.index % extra_socket_every == 0:
                homes.append((user.index + 1) % len(server_urls))
            for home in homes:
                sock = Socket(len(self.sockets), user, server_urls[home])
                user.sockets.append(sock)
                self.sockets.append(sock)
        gate = asyncio.Semaphore(concurrency)

        async def open_one(sock: Socket) -> None:
            async with gate:
                sock.ws, _ = await self.open(sock.url, sock.user.token)
            sock.reader = asyncio.create_task(self.read(sock))

        await asyncio.gather(*(open_one(sock) for sock in self.sockets))

    async def close(self) -> None:
        self.closing = True

        async def close_one(sock: Socket) -> None:
            if sock.ws is not None:
                await sock.ws.close()
            if sock.reader is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(sock.reader, 5)

        await asyncio.gather(*(close_one(sock) for sock in self.sockets), return_exceptions=True)

    # --- receiving -------------------------------------------------------------------

    async def read(self, sock: Socket) -> None:
        sent_by_id = self.sent
        try:
            async for raw in sock.ws:
                arrived = now()
                frame = loads(raw)
                kind = frame.get("type")
                if kind == "message":
                    message = frame["message"]
                    client_id = message.get("client_id")
                    sent = sent_by_id.get(client_id)
                    if sent is None:
                        self.foreign_frames += 1
                        continue
                    sock.received.append((client_id, message.get("id")))
                    sent.deliveries += 1
                    if sock.user is sent.recipient:
                        sent.phase.latencies.append(arrived - sent.sent_at)
                        sent.phase.last_delivery_at = arrived
                    self._maybe_done(sent)
                elif kind == "ack":
                    sent = sent_by_id.get(frame.get("client_id"))
                    if sent is None:
                        self.foreign_frames += 1
                        continue
                    sent.acked_at = arrived
                    sent.message_id = frame["message"].get("id")
                    sent.phase.ack_latencies.append(arrived - sent.sent_at)
                    self._maybe_done(sent)
                elif kind == "error":
                    code = str(frame.get("code"))
                    self.error_frames[code] = self.error_frames.get(code, 0) + 1
                    sent = sent_by_id.get(frame.get("client_id"))
                    if sent is not None and sent.acked_at is None:
                        sent.error = code
                        self._maybe_done(sent)
                # presence, typing, read, pong: not measured
        except ConnectionClosed:
            pass
        finally:
            if not self.closing:
                sock.closed_by_server = f"{sock.ws.close_code} {sock.ws.close_reason}".strip()

    def _maybe_done(self, sent: Sent) -> None:
        if sent.done:
            return
        if sent.error is not None or (sent.acked_at is not None and sent.deliveries >= sent.expected):
            sent.done = True
            sent.phase.completed += 1
            sent.phase.check_finished()

    # --- sending ---------------------------------------------------------------------

    async def send(self, phase: Phase, sender: User, recipient: User) -> None:
        sock = sender.sockets[0]
        seq = sock.next_seq
        sock.next_seq += 1
        client_id = f"{self.run_tag}.{phase.name}.{sock.index}.{seq}"
        expected = len(recipient.sockets) + len(sender.sockets) - 1
        frame = dumps(
            {"type": "send", "to": recipient.username, "body": f"{client_id} {FILLER}", "client_id": client_id}
        )
        sent = Sent(client_id, sender, recipient, sock, seq, phase, now(), expected)
        self.sent[client_id] = sent
        phase.sent += 1
        await sock.ws.send(frame)

    async def finish(self, phase: Phase, timeout: float, stall_seconds: float = 30) -> bool:
        """Wait until every message of the phase is acknowledged and delivered; give up
        after `timeout`, or sooner when nothing progressed for `stall_seconds`."""
        phase.sending_done = True
        phase.sending_finished_at = now()
        phase.check_finished()
        deadline = now() + timeout
        progress, progressed_at = phase.completed, now()
        while not phase.finished.is_set():
            if now() > deadline or now() - progressed_at > stall_seconds:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(phase.finished.wait(), 1)
            if phase.completed != progress:
                progress, progressed_at = phase.completed, now()
        return True

    async def warmup(self, timeout: float = 60) -> dict:
        """One message per user, unmeasured: imports, connection pools and caches."""
        phase = Phase("warmup", started_at=now())
        for user in self.users:
            await self.send(phase, user, user.peers[0])
        complete = await self.finish(phase, timeout)
        return {"sent": phase.sent, "complete": complete}

    async def paced(self, name: str, rate: float, seconds: float, timeout: float = 60) -> dict:
        """`rate` messages per second, spread evenly, round-robin over the users, each
        to its peers in turn; latency is from the send to each of the recipient's
        sockets receiving the `message` frame."""
        phase = Phase(name, started_at=now())
        total = max(1, round(rate * seconds))
        users = self.users
        for i in range(total):
            due = phase.started_at + i / rate
            delay = due - now()
            if delay > 0:
                await asyncio.sleep(delay)
            sender = users[i % len(users)]
            await self.send(phase, sender, sender.peers[(i // len(users)) % len(sender.peers)])
        complete = await self.finish(phase, timeout + phase.sent / 10)
        send_seconds = phase.sending_finished_at - phase.started_at
        return {
            "messages": phase.sent,
            "complete": complete,
            "incomplete": phase.sent - phase.completed,
            "target_rate": rate,
            "achieved_send_rate": round(phase.sent / send_seconds, 1) if send_seconds > 0 else None,
            # Below the target rate: the system could not keep up, and the latencies
            # are mostly time spent queueing.
            "delivered_per_second": _rate(phase.sent, (phase.last_delivery_at or now()) - phase.started_at),
            "latency": latency_summary(phase.latencies),
            "ack_latency": latency_summary(phase.ack_latencies),
        }

    async def burst(self, name: str, per_user: int, timeout: float = 60) -> dict:
        """Every user sends `per_user` messages back to back (without waiting for acks);
        throughput is messages delivered to their recipients per second, from the first
        send to the last delivery."""
        phase = Phase(name, started_at=now())

        async def one_user(user: User) -> None:
            for k in range(per_user):
                await self.send(phase, user, user.peers[k % len(user.peers)])

        await asyncio.gather(*(one_user(user) for user in self.users))
        # Generous: a slow server on a busy machine must still finish, not time out.
        complete = await self.finish(phase, timeout + phase.sent / 10)
        seconds = (phase.last_delivery_at or now()) - phase.started_at
        delivered = sum(1 for s in self.sent.values() if s.phase is phase and s.error is None and s.done)
        return {
            "messages": phase.sent,
            "complete": complete,
            "incomplete": phase.sent - phase.completed,
            "seconds": round(seconds, 3),
            "send_seconds": round(phase.sending_finished_at - phase.started_at, 3),
            "delivered_per_second": round(delivered / seconds, 1) if seconds > 0 else None,
            "latency": latency_summary(phase.latencies),
            "ack_latency": latency_summary(phase.ack_latencies),
        }

    # --- history over REST -----------------------------------------------------------

    async def history(
        self,
        http_urls: list[str],
        seconds: float,
        workers: int,
        pick: Callable[[random.Random], tuple[User, User]],
        rate: float | None = None,
    ) -> dict:
        """Without `rate` (the most pages/s): `workers` loops, each fetching the newest
        page of a random conversation and then the page before it (following `next`),
        with the user's Bearer token; its latencies are mostly queueing behind the
        other loops. With `rate` (latency at a given load): that many such fetches per
        second, started on schedule whether or not earlier ones have finished (open
        loop), as readers scrolling would."""
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        deadline = now() + seconds
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=0 if rate else workers)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def get(url: str, token: str) -> dict | None:
                started = now()
                async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                    body = await response.read()
                    status = response.status
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status != 200:
                    return None
                latencies.append(now() - started)
                return loads(body)

            async def worker(number: int) -> None:
                rnd = random.Random(number)
                while now() < deadline:
                    user, peer = pick(rnd)
                    base = http_urls[user.index % len(http_urls)]
                    page = await get(f"{base}/api/conversations/{peer.username}/messages/", user.token)
                    if page and page.get("next") and now() < deadline:
                        await get(page["next"], user.token)

            async def scroll(rnd: random.Random) -> None:
                user, peer = pick(rnd)
                base = http_urls[user.index % len(http_urls)]
                page = await get(f"{base}/api/conversations/{peer.username}/messages/", user.token)
                if page and page.get("next"):
                    await get(page["next"], user.token)

            started = now()
            if rate:
                rnd, tasks, i = random.Random(0), [], 0
                while started + i / rate < deadline:
                    delay = started + i / rate - now()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(scroll(rnd)))
                    i += 1
                await asyncio.gather(*tasks)
            else:
                await asyncio.gather(*(worker(n) for n in range(workers)))
            elapsed = now() - started
        pages = len(latencies)
        return {
            "pages": pages,
            "seconds": round(elapsed, 3),
            "pages_per_second": round(pages / elapsed, 1) if elapsed > 0 else None,
            "latency": latency_summary(latencies),
            "statuses": statuses,
            "workers": None if rate else workers,
            "scrolls_per_second": rate,
        }


async def idle_connections(
    url: str, users: list[User], seconds: float, concurrency: int, on_progress: Callable[[int], None] | None = None
) -> tuple[list[ClientConnection], dict]:
    """Open authenticated connections (one per idle user) for about `seconds`, `concurrency`
    handshakes at a time; the caller closes them with `close_idle`."""
    client = ChatClient("idle")
    opened: list[ClientConnection] = []
    failures: dict[str, int] = {}
    queue = iter(users)
    started = now()
    deadline = started + seconds
    last_ready = started

    async def worker() -> None:
        nonlocal last_ready
        for user in queue:
            if now() >= deadline:
                return
            try:
                ws, _ = await client.open(url, user.token, timeout=max(1.0, deadline - now() + 5))
            except (OSError, TimeoutError, WebSocketException) as exc:
                name = type(exc).__name__
                failures[name] = failures.get(name, 0) + 1
                continue
            opened.append(ws)
            last_ready = now()
            if on_progress and len(opened) % 1000 == 0:
                on_progress(len(opened))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = last_ready - started
    return opened, {
        "connections": len(opened),
        "offered": len(users),
        "seconds": round(elapsed, 3),
        "connections_per_second": round(len(opened) / elapsed, 1) if elapsed > 0 else None,
        "failures": failures,
        "concurrency": concurrency,
    }


async def close_idle(connections: list[ClientConnection]) -> None:
    for start in range(0, len(connections), 500):
        await asyncio.gather(*(ws.close() for ws in connections[start : start + 500]), return_exceptions=True)
