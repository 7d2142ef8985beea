"""The WebSocket endpoint `/ws/chat/`: one connection per tab or device, carrying all
of a user's conversations. A thin adapter: it parses frames, calls the services and
selectors, and shapes their results into the frames of the contract. Authentication
happened before (messaging.ws_auth); the user is in `scope["user"]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from accounts import presence
from messaging import presence_events, recovery, selectors, services
from messaging.batching import send_batcher
from messaging.delivery import user_group
from messaging.errors import ChatError, InvalidInput, NotFound, RateLimited
from messaging.ordering import InOrder
from messaging.serializers import message_dict

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024
# How long a message waits for one that should have come before it, before the gap is
# filled from the database.
GAP_WAIT_SECONDS = 1.0
# A `sync` page stops after about this much, with `more: true` (besides at most
# SYNC_LIMIT messages).
SYNC_PAGE_BYTES = 256 * 1024
# Ids of the messages this socket sent, so that a gap fill does not echo them back.
ACKED_MEMORY = 1000
# Sends of one socket on their way to the database at once; beyond that, its frames
# wait to be read.
MAX_UNANSWERED_SENDS = 64
CLOSE_TOO_BIG = 1009
CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_MANY_CONNECTIONS = 4429


def _json(frame: dict) -> str:
    try:
        return orjson.dumps(frame).decode()
    except TypeError:  # a lone surrogate in an echoed input; stored text never has one
        return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def _parse(text: str) -> Any:
    """orjson, or the standard library for what orjson refuses but JSON allows (an
    escaped lone surrogate, integers beyond 64 bits), so that such a frame gets the
    same answer as any other: a `validation` error that carries its `client_id`."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _echoable_client_id(frame: dict) -> str | None:
    """The frame's `client_id` as errors echo it: a lone surrogate could not even be
    sent back."""
    client_id = frame.get("client_id")
    if not isinstance(client_id, str) or not services.text_is_storable(client_id):
        return None
    return client_id


def _open_connection(user: Any, channel_name: str) -> tuple[bool, int, int]:
    """Count the connection and find where its client stands, in one thread hop:
    (came online, live connections of the user, newest message id)."""
    came_online, count = presence.presence_open(user_id=user.pk, connection_id=channel_name)
    last_id = selectors.last_message_id(user=user) if count <= settings.MAX_CONNECTIONS_PER_USER else 0
    return came_online, count, last_id


class ChatConsumer(AsyncWebsocketConsumer):
    user: Any
    group: str
    # Made on the first send: most sockets of a crowd only read (memory per socket).
    acked: deque[int] | None = None
    unanswered: deque[tuple[asyncio.Future, str | None]] | None = None
    answering: asyncio.Task | None = None

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch, without its `aclose_old_connections()` before every
        frame and event: that is a thread hop each (a fifth of the server's CPU under
        load), and every database call here goes through `database_sync_to_async` or
        the send batcher, which manage their connections themselves."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.group = user_group(self.user.pk)
        self.last_heartbeat = 0.0
        # Subscribe before `ready`: every message stored after `ready` reaches us.
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.last_heartbeat = time.monotonic()
        # On the one database thread even when it is Redis only (a token socket's user
        # came with its newest message id): run on the default executor's threads
        # instead, side by side, connecting cost 10-25% more CPU (`make bench` idle).
        came_online, count, last_id = await database_sync_to_async(_open_connection)(self.user, self.channel_name)
        if count > settings.MAX_CONNECTIONS_PER_USER:
            await self._leave()
            await self.close(code=CLOSE_TOO_MANY_CONNECTIONS)
            return
        self.in_order = InOrder(seen=last_id)
        self.delivery_lock = asyncio.Lock()
        self.gap_task: asyncio.Task | None = None
        await self.accept()
        me = {"id": self.user.pk, "username": self.user.username}
        await self.send(_json({"type": "ready", "user": me, "last_message_id": last_id}))
        recovery.register(self)
        presence_events.ensure_sweeper()
        # Loaded with the user (messaging.selectors.socket_user); not kept for the
        # socket's life.
        peer_ids = self.user.__dict__.pop("peer_ids", None)
        if came_online:
            await presence_events.announce(user_id=self.user.pk, online=True, user=self.user, peer_ids=peer_ids)

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def _leave(self) -> None:
        """Unsubscribe and stop counting this connection; once only."""
        group, self.group = getattr(self, "group", ""), ""
        if not group:
            return
        recovery.unregister(self)
        for task in (getattr(self, "gap_task", None), getattr(self, "answering", None)):
            if task is not None:
                task.cancel()
        try:
            await self.channel_layer.group_discard(group, self.channel_name)
        except Exception:
            # Redis is down, say: the presence below must still be counted down.
            logger.warning("leaving group %s failed", group, exc_info=True)
        went_offline = await database_sync_to_async(presence.presence_disconnect)(
            user_id=self.user.pk, connection_id=self.channel_name
        )
        if went_offline:
            await presence_events.announce(user_id=self.user.pk, online=False)

    async def _heartbeat(self, *, force: bool = False) -> bool:
        """Refresh this connection's presence, at most every few seconds. Returns True
        when the user (re)appeared online."""
        now = time.monotonic()
        if not force and now - self.last_heartbeat < max(1.0, settings.PRESENCE_TIMEOUT_SECONDS / 4):
            return False
        self.last_heartbeat = now
        try:
            # Redis only: not on the database thread, where it would wait behind
            # database work (for seconds while PostgreSQL is unreachable).
            return await sync_to_async(presence.presence_heartbeat, thread_sensitive=False)(
                user_id=self.user.pk, connection_id=self.channel_name
            )
        except Exception:
            # Redis is down, say. Raising here would close the socket with 1011 before
            # the frame is answered; errors keep the connection open instead, and the
            # next heartbeat counts the connection again.
            logger.warning("presence heartbeat failed for user %s", self.user.pk, exc_info=True)
            return False

    # --- frames from the client -------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if (
            text_data is not None
            and len(text_data) > MAX_FRAME_BYTES // 4
            and len(text_data.encode("utf-8")) > MAX_FRAME_BYTES
        ):
            await self.close(code=CLOSE_TOO_BIG)
            return
        frame, problem = None, "Frames must be JSON text, not binary."
        if text_data is not None:
            problem = "Frames must be JSON objects."
            with contextlib.suppress(ValueError, RecursionError):  # deep nesting fits in 64 KiB
                frame = _parse(text_data)
        if self.answering is not None and not (isinstance(frame, dict) and frame.get("type") == "send"):
            # Answers go out in the order of the frames: sends in a row are stored
            # together, anything else waits until they are answered.
            await asyncio.wait([self.answering])
        if not isinstance(frame, dict):
            await self._error("bad_frame", problem)
            return
        if await self._heartbeat():
            await presence_events.announce(user_id=self.user.pk, online=True)
        frame_type = frame.get("type")
        handler = self.handlers.get(frame_type) if isinstance(frame_type, str) else None
        if handler is None:
            shown = frame_type[:40] if isinstance(frame_type, str) else type(frame_type).__name__
            await self._error("bad_frame", f"Unknown frame type {shown!r}.")
            return
        client_id = _echoable_client_id(frame)
        try:
            await handler(self, frame)
        except ChatError as exc:
            await self._error(exc.code, exc.detail, client_id=client_id, exc=exc)
        except Exception:
            logger.exception("frame %r failed for user %s", frame.get("type"), self.user.pk)
            await self._error("server_error", "Something went wrong; try again.", client_id=client_id)

    async def _error(self, code: str, detail: str, *, client_id: str | None = None, exc: Exception | None = None):
        frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail, "client_id": client_id}
        if isinstance(exc, RateLimited):
            frame["retry_after"] = exc.retry_after
        await self.send(_json(frame))

    async def on_send(self, frame: dict) -> None:
        """Queue the send and go on reading frames: a client may have several sends
        on their way (answered in order, by `_answer_sends`), so that one socket's
        stream of messages is stored in batches rather than one round trip each."""
        client_id = _echoable_client_id(frame)
        request = services.SendRequest(
            sender=self.user,
            recipient_username=frame.get("to"),
            body=frame.get("body"),
            client_id=frame.get("client_id"),
            origin_channel=self.channel_name,
        )
        if self.unanswered is None:
            self.unanswered = deque()
        future = send_batcher.enqueue(request)
        self.unanswered.append((future, client_id))
        if self.answering is None:
            self.answering = asyncio.get_running_loop().create_task(self._answer_sends())
        if len(self.unanswered) >= MAX_UNANSWERED_SENDS:
            # Read no further frames (TCP pushes back) until the oldest is answered.
            await asyncio.wait([self.unanswered[0][0]])

    async def _answer_sends(self) -> None:
        """Answer queued sends in the order they came: `ack`, or `error`."""
        try:
            while self.unanswered:
                future, client_id = self.unanswered[0]
                try:
                    result = await future
                except ChatError as exc:
                    await self._error(exc.code, exc.detail, client_id=client_id, exc=exc)
                except Exception:
                    logger.exception("send failed for user %s", self.user.pk)
                    await self._error("server_error", "Something went wrong; try again.", client_id=client_id)
                else:
                    payload = message_dict(result.message)  # sender and recipient are loaded: no query
                    if self.acked is None:
                        self.acked = deque(maxlen=ACKED_MEMORY)
                    self.acked.append(result.message.pk)
                    await self.send(_json({"type": "ack", "client_id": result.message.client_id, "message": payload}))
                finally:
                    self.unanswered.popleft()
        finally:
            self.answering = None

    async def on_sync(self, frame: dict) -> None:
        since = frame.get("since")
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise InvalidInput("`since` must be a message id (0 for everything).")
        messages, more = await database_sync_to_async(selectors.messages_since)(
            user=self.user, since=since, limit=selectors.SYNC_LIMIT
        )
        async with self.delivery_lock:
            last_id, sent_bytes = since, 0
            for message in messages:
                if sent_bytes >= SYNC_PAGE_BYTES:
                    # A page is also bounded in bytes, so that a client that reads is
                    # never taken for one that does not (chatproject.slow_clients).
                    more = True
                    break
                frame = _json({"type": "message", "message": message_dict(message)})
                await self.send(frame)
                sent_bytes += len(frame)
                last_id = message.pk
            await self.send(_json({"type": "synced", "last_id": last_id, "more": more}))
            # The client has these now: live copies of them are not sent again.
            for ready in self.in_order.advance(last_id):
                await self._emit(ready["message"], own=ready.get("origin") == self.channel_name)

    async def on_typing(self, frame: dict) -> None:
        to = frame.get("to")
        if not isinstance(to, str) or not to:
            raise InvalidInput("`to` must be a username.")
        if not services.text_is_storable(to):
            raise NotFound(f"No user named {to!r}.")
        peer_id = await database_sync_to_async(selectors.active_user_id)(username=to)
        if peer_id is None:
            raise NotFound(f"No user named {to!r}.")
        if peer_id == self.user.pk:
            raise InvalidInput("You cannot type to yourself.")
        await self.channel_layer.group_send(user_group(peer_id), {"type": "chat.typing", "from": self.user.username})

    async def on_read(self, frame: dict) -> None:
        await database_sync_to_async(services.conversation_mark_read)(
            user=self.user, peer_username=frame.get("peer"), up_to=frame.get("up_to")
        )

    async def on_ping(self, frame: dict) -> None:
        await self.send(_json({"type": "pong"}))

    handlers = {"send": on_send, "sync": on_sync, "typing": on_typing, "read": on_read, "ping": on_ping}

    # --- events from the channel layer ------------------------------------------

    async def chat_messages(self, event: dict) -> None:
        """A batch's messages to or from this user, in id order (messaging.services)."""
        async with self.delivery_lock:
            for item in event["items"]:
                for ready in self.in_order.offer(item):
                    await self._emit(ready["message"], own=ready.get("origin") == self.channel_name)
            self._watch_gap()

    async def _emit(self, message: dict, *, own: bool) -> None:
        if own or (self.acked is not None and message["id"] in self.acked):
            return  # this socket sent it and got the ack instead
        await self.send(_json({"type": "message", "message": message}))

    def _watch_gap(self) -> None:
        if self.in_order.waiting and (self.gap_task is None or self.gap_task.done()):
            self.gap_task = asyncio.get_running_loop().create_task(self._fill_gap())

    async def _fill_gap(self) -> None:
        """A message is held back for one that has not arrived: after a moment, read
        what is missing from PostgreSQL."""
        await asyncio.sleep(GAP_WAIT_SECONDS)
        async with self.delivery_lock:
            if self.in_order.waiting:
                await self._fill_from_database()

    async def catch_up(self) -> None:
        """Read what this socket missed from PostgreSQL (messaging.recovery)."""
        async with self.delivery_lock:
            await self._fill_from_database()

    async def _fill_from_database(self) -> None:
        """Deliver the messages after the last one delivered; hold the delivery lock."""
        messages, _ = await database_sync_to_async(selectors.messages_since)(
            user=self.user, since=self.in_order.seen, limit=selectors.SYNC_LIMIT
        )
        logger.info("user %s: filled a gap of %d message(s) from the database", self.user.pk, len(messages))
        for message in messages:
            if message.pk > self.in_order.seen:
                await self._emit(message_dict(message), own=False)
                self.in_order.seen = message.pk
        for ready in self.in_order.advance(self.in_order.seen):
            await self._emit(ready["message"], own=ready.get("origin") == self.channel_name)
        self._watch_gap()

    async def chat_typing(self, event: dict) -> None:
        await self.send(_json({"type": "typing", "from": event["from"]}))

    async def chat_read(self, event: dict) -> None:
        await self.send(_json({"type": "read", "by": event["by"], "peer": event["peer"], "up_to": event["up_to"]}))

    async def chat_disconnect(self, event: dict) -> None:
        """The account was deactivated: this socket may no longer be used."""
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def chat_presence(self, event: dict) -> None:
        await self.send(
            _json(
                {"type": "presence", "user": event["user"], "online": event["online"], "last_seen": event["last_seen"]}
            )
        )
