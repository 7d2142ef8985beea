"""Private services and WebSocket clients for the fault tests (tests/test_faults.py).

The machine's PostgreSQL and Redis are shared by everyone's tests: a fault test never
stops them. It starts its own redis-server or PostgreSQL cluster on a free port and
points its daphne processes at that one.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import redis
from rest_framework_simplejwt.tokens import AccessToken
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.procs import ROOT, Process, free_port, process_env

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivateRedis(Process):
    """A throwaway redis-server that keeps nothing on disk: a restart loses everything,
    as a crashed Redis without persistence does."""

    def __init__(self) -> None:
        self.port = free_port()
        super().__init__(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            dict(os.environ),
            f"redis-{self.port}",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> PrivateRedis:
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self.log_tail()}")


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, with one database `chat`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "root", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    @property
    def url(self) -> str:
        return f"postgres://root@127.0.0.1:{self.port}/chat"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.dir / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: every backend is killed at once, as in a crash."""
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )

    def create_and_migrate(self) -> None:
        with psycopg.connect(f"postgres://root@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE chat")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            env=process_env(DATABASE_URL=self.url),
            check=True,
            timeout=120,
        )

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, params).fetchall()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def http_json(
    url: str,
    *,
    token: str | None = None,
    body: dict | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """(status, JSON body or None) of a GET, or a POST when there is a body."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def token_for(user) -> str:
    return str(AccessToken.for_user(user))


class LiveSocket:
    """A WebSocket client whose every frame is kept, in arrival order, by a reader task
    (a real client reads all the time). Optionally pings to keep its presence alive."""

    def __init__(self, ws, token: str, keepalive: float | None) -> None:
        self.ws = ws
        self.token = token
        self.frames: list[dict] = []
        self.sync_indexes: set[int] = set()
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self._pinger = asyncio.create_task(self._ping(keepalive)) if keepalive else None

    @classmethod
    async def open(cls, ws_url: str, token: str, *, keepalive: float | None = 0.5) -> LiveSocket:
        ws = await ws_connect(ws_url, max_size=2**22, open_timeout=10)
        await ws.send(json.dumps({"type": "auth", "token": token}))
        socket = cls(ws, token, keepalive)
        socket.ready = await socket.wait_for(lambda f: f["type"] == "ready", timeout=10)
        return socket

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    async def _ping(self, every: float) -> None:
        try:
            while True:
                await asyncio.sleep(every)
                await self.ws.send('{"type":"ping"}')
        except ConnectionClosed:
            pass

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    async def wait_for(self, predicate, *, timeout: float, start: int = 0) -> dict:
        """The first frame from index `start` on that matches; raises TimeoutError, or
        ConnectionError when the socket closed first."""
        async with asyncio.timeout(timeout):
            index = start
            while True:
                while index < len(self.frames):
                    if predicate(self.frames[index]):
                        return self.frames[index]
                    index += 1
                if self.closed.is_set():
                    raise ConnectionError("socket closed")
                self._changed.clear()
                await self._changed.wait()

    async def sync_all(self, since: int, page_ids, *, timeout: float = 30) -> list[dict]:
        """`sync` from `since`, page after page; the messages it returned.

        Live frames may arrive while a sync is answered, but the consumer handles one
        thing at a time: a page is the run of message frames right before `synced`.
        `page_ids(since, last_id)` says which ids it must hold (from PostgreSQL), which
        tells the page from the live frames before it."""
        found: list[dict] = []
        while True:
            start = len(self.frames)
            await self.send({"type": "sync", "since": since})
            synced = await self.wait_for(lambda f: f["type"] == "synced", timeout=timeout, start=start)
            end = next(i for i in range(start, len(self.frames)) if self.frames[i] is synced)
            expected = await page_ids(since, synced["last_id"])
            indexes = [i for i in range(start, end) if self.frames[i]["type"] == "message"][-len(expected) :]
            page = [self.frames[i]["message"] for i in indexes] if expected else []
            assert [m["id"] for m in page] == expected, (since, synced, [m["id"] for m in page], expected)
            self.sync_indexes.update(indexes if expected else [])
            found.extend(page)
            if not synced["more"]:
                return found
            since = synced["last_id"]

    def live_messages(self) -> list[dict]:
        return [
            f["message"] for i, f in enumerate(self.frames) if f["type"] == "message" and i not in self.sync_indexes
        ]

    async def close(self) -> None:
        if self._pinger:
            self._pinger.cancel()
        await self.ws.close()
        self._reader.cancel()


class Sender:
    """A client that sends `count` messages with client ids, a few at a time without
    waiting, as a real client would: when its connection drops or stays silent for
    `answer_timeout`, it reconnects (to `server_url()`) and resends every message not
    acknowledged, with the same client id."""

    def __init__(self, token: str, to: str, prefix: str, count: int, *, window: int = 4) -> None:
        self.token, self.to, self.prefix, self.count, self.window = token, to, prefix, count, window
        self.acked: dict[str, dict] = {}
        self.errors: list[dict] = []
        self.conflicting_acks: list[tuple[dict, dict]] = []
        self.silences = 0
        self.reconnects = 0
        self.sent = 0

    def frame(self, index: int) -> dict:
        return {"type": "send", "to": self.to, "body": f"{self.prefix} {index}", "client_id": f"{self.prefix}-{index}"}

    async def _connect(self, server_url, deadline: float):
        while True:
            try:
                ws = await ws_connect(server_url(), max_size=2**22, open_timeout=5)
                await ws.send(json.dumps({"type": "auth", "token": self.token}))
                async with asyncio.timeout(10):
                    while json.loads(await ws.recv())["type"] != "ready":
                        pass
                return ws
            except (OSError, ConnectionClosed, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def run(self, server_url, *, answer_timeout: float = 10, limit: float = 60) -> None:
        deadline = time.monotonic() + limit
        pending: dict[int, float] = {}  # index -> when it was (last) sent
        next_index = 0
        retry: list[int] = []
        ws = None
        while len(self.acked) < self.count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.prefix}: {len(self.acked)}/{self.count} acknowledged")
            try:
                if ws is None:
                    ws = await self._connect(server_url, deadline)
                    retry = list(pending)
                if retry:
                    await asyncio.sleep(0.2)  # after an error, a real client waits a little
                    for index in retry:
                        await ws.send(json.dumps(self.frame(index)))
                        pending[index] = time.monotonic()
                    retry = []
                while len(pending) < self.window and next_index < self.count:
                    await ws.send(json.dumps(self.frame(next_index)))
                    pending[next_index] = time.monotonic()
                    next_index += 1
                    self.sent += 1
                wait = max(0.05, min(pending.values()) + answer_timeout - time.monotonic())
                try:
                    async with asyncio.timeout(wait):
                        frame = json.loads(await ws.recv())
                except TimeoutError:
                    self.silences += 1  # no answer in time: treat the connection as dead
                    raise ConnectionError("silent") from None
            except (OSError, ConnectionClosed):
                if ws is not None:
                    ws.transport.abort()
                ws = None
                self.reconnects += 1
                continue
            client_id = frame.get("client_id") or ""
            index = int(client_id.rsplit("-", 1)[1]) if client_id.startswith(f"{self.prefix}-") else None
            if frame["type"] == "ack":
                earlier = self.acked.setdefault(client_id, frame["message"])
                if earlier["id"] != frame["message"]["id"]:
                    self.conflicting_acks.append((earlier, frame["message"]))
                pending.pop(index, None)
            elif frame["type"] == "error":
                self.errors.append(frame)
                if index in pending:
                    retry.append(index)
        if ws is not None:
            await ws.close()


async def eventually(condition, *, timeout: float, every: float = 0.05) -> bool:
    """Poll `condition()` (plain or async) until it holds; False after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


async def open_stalled_socket(ws_url: str, token: str):
    """A client that authenticates and then never reads: a tiny receive buffer, and the
    library stops reading as soon as one frame waits unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(ws_url.split(":")[2].split("/")[0])))
    ws = await ws_connect(ws_url, sock=sock, max_queue=1, max_size=2**22, open_timeout=10, compression=None)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    async with asyncio.timeout(10):
        ready = json.loads(await ws.recv())
    return ws, ready
