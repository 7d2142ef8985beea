"""Baseline 2: a bare `websockets` relay over Redis pub/sub that stores every message in
PostgreSQL (psycopg 3 async), in a table of its own that the benchmark creates.

No framework: the JWT is checked with PyJWT against SECRET_KEY, the sender's name is
read once per connection, a send is one INSERT (idempotent per sender and client_id),
an ack, and one PUBLISH per user; each process subscribes once per locally connected
user. It speaks the project's frames (auth/ready/send/ack/message), so the same client
drives it.

    python -m bench.ws_relay --port 8765 --table bench_relay_message
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import uuid
from http import HTTPStatus

import jwt
import redis.asyncio as aioredis
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

logger = logging.getLogger("bench.ws_relay")

MAX_FRAME = 64 * 1024


def create_table_sql(table: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        " id bigserial PRIMARY KEY, sender text NOT NULL, recipient text NOT NULL, body text NOT NULL,"
        " client_id text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (sender, client_id))"
    ).format(sql.Identifier(table))


class Hub:
    """The sockets of this process by username, fed by one Redis pub/sub connection."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self.sockets: dict[str, dict[str, ServerConnection]] = {}

    def channel(self, username: str) -> str:
        return f"{self.prefix}.user.{username}"

    async def start(self) -> None:
        # listen() returns at once unless something is subscribed.
        await self.pubsub.subscribe(f"{self.prefix}.hello")
        self.listener = asyncio.create_task(self.listen())

    async def join(self, username: str, socket_id: str, ws: ServerConnection) -> None:
        local = self.sockets.setdefault(username, {})
        local[socket_id] = ws
        if len(local) == 1:
            await self.pubsub.subscribe(self.channel(username))

    async def leave(self, username: str, socket_id: str) -> None:
        local = self.sockets.get(username, {})
        local.pop(socket_id, None)
        if not local:
            self.sockets.pop(username, None)
            await self.pubsub.unsubscribe(self.channel(username))

    async def publish(self, usernames: set[str], payload: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for username in usernames:
                pipe.publish(self.channel(username), payload)
            await pipe.execute()

    async def listen(self) -> None:
        start = len(self.prefix) + len(".user.")
        async for item in self.pubsub.listen():
            if item["type"] != "message":
                continue
            username = item["channel"].decode()[start:]
            event = json.loads(item["data"])
            frame = json.dumps({"type": "message", "message": event["message"]})
            for socket_id, ws in list(self.sockets.get(username, {}).items()):
                if socket_id != event["origin"]:
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(frame)


class Relay:
    def __init__(self, pool: AsyncConnectionPool, hub: Hub, secret: str, table: str) -> None:
        self.pool = pool
        self.hub = hub
        self.secret = secret
        self.insert = sql.SQL(
            "INSERT INTO {} (sender, recipient, body, client_id) VALUES (%s, %s, %s, %s)"
            # A retried client_id returns the stored row instead of a second one.
            " ON CONFLICT (sender, client_id) DO UPDATE SET client_id = EXCLUDED.client_id"
            " RETURNING id, created_at"
        ).format(sql.Identifier(table))

    async def authenticate(self, raw: str) -> str | None:
        try:
            frame = json.loads(raw)
            claims = jwt.decode(frame["token"], self.secret, algorithms=["HS256"])
            if frame.get("type") != "auth" or claims.get("token_type") != "access":
                return None
            user_id = int(claims["user_id"])
        except (ValueError, KeyError, TypeError, jwt.PyJWTError):
            return None
        async with self.pool.connection() as conn:
            cursor = await conn.execute("SELECT username FROM accounts_user WHERE id = %s AND is_active", (user_id,))
            row = await cursor.fetchone()
        return row[0] if row else None

    async def handle(self, ws: ServerConnection) -> None:
        try:
            username = await self.authenticate(await asyncio.wait_for(ws.recv(), 10))
        except (TimeoutError, ConnectionClosed):
            return
        if username is None:
            await ws.close(4401)
            return
        socket_id = uuid.uuid4().hex
        await self.hub.join(username, socket_id, ws)
        try:
            await ws.send(json.dumps({"type": "ready", "user": {"username": username}, "last_message_id": 0}))
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") == "send":
                    await self.send(ws, username, socket_id, frame)
                elif frame.get("type") == "ping":
                    await ws.send('{"type": "pong"}')
        except ConnectionClosed:
            pass
        finally:
            await self.hub.leave(username, socket_id)

    async def send(self, ws: ServerConnection, username: str, socket_id: str, frame: dict) -> None:
        recipient, body, client_id = str(frame["to"]), str(frame["body"]), str(frame["client_id"])
        async with self.pool.connection() as conn:
            cursor = await conn.execute(self.insert, (username, recipient, body, client_id))
            message_id, created_at = await cursor.fetchone()
        message = {
            "id": message_id,
            "sender": username,
            "recipient": recipient,
            "body": body,
            "created_at": created_at.isoformat(),
            "client_id": client_id,
        }
        await ws.send(json.dumps({"type": "ack", "client_id": client_id, "message": message}))
        await self.hub.publish({username, recipient}, json.dumps({"origin": socket_id, "message": message}))


def _health(connection: ServerConnection, request):
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


async def serve_forever(port: int, table: str) -> None:
    pool = AsyncConnectionPool(
        os.environ["DATABASE_URL"], min_size=2, max_size=8, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    redis = aioredis.from_url(os.environ["REDIS_URL"])
    hub = Hub(redis, os.environ.get("CHANNEL_LAYER_PREFIX", "bench.ws-relay"))
    await hub.start()
    relay = Relay(pool, hub, os.environ["SECRET_KEY"], table)
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.cancel)
    async with serve(
        relay.handle,
        "127.0.0.1",
        port,
        process_request=_health,
        max_size=MAX_FRAME,
        compression=None,
        # As daphne does: a ping every 20 s, and 30 s for the answer.
        ping_interval=20,
        ping_timeout=30,
    ):
        with contextlib.suppress(asyncio.CancelledError):
            await stop
    await pool.close()
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--table", default="bench_relay_message")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve_forever(args.port, args.table))


if __name__ == "__main__":
    main()
