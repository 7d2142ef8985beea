"""Delivery of channel-layer events to every socket of some users, on any process.

Sends run in worker threads (database_sync_to_async, Django's sync views) and
announce their message after commit. Waiting there for Redis would hold the single
database thread of the process for a round trip per recipient; instead the event is
handed to a queue on the server's event loop, whose one worker task publishes events
in the order they were committed. Where no server loop runs (Celery tasks, management
commands, plain sync tests) the event is published synchronously.

Delivery is best effort by design: a socket that misses an event (Redis down, process
killed) catches up with `sync` from PostgreSQL, the source of truth.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 100_000
# At most this many queue entries (each a whole batch of sends' events) per pipeline.
PUBLISH_BATCH = 64

_state_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_queue: asyncio.Queue | None = None
_worker_task: asyncio.Task | None = None


class DeliveryQueueFull(RuntimeError):
    pass


def user_group(user_id: int) -> str:
    """The channel-layer group that every socket of the user joins."""
    return f"user.{user_id}"


async def publish(items: list[tuple[list[int], dict]]) -> None:
    """Publish (users, event) items, in order: with one Redis pipeline when the layer
    can (chatproject.channel_layer), else one group_send each."""
    layer = get_channel_layer()
    if layer is None or not items:
        return
    sends = [(user_group(user_id), event) for user_ids, event in items for user_id in dict.fromkeys(user_ids)]
    many = getattr(layer, "group_send_many", None)
    if many is not None:
        try:
            await many(sends)
        except Exception:
            logger.exception("delivery of %d event(s) failed; their clients will catch up", len(sends))
        return
    for group, event in sends:
        try:
            await layer.group_send(group, event)
        except Exception:
            logger.exception("delivery to %s failed; their clients will catch up with sync", group)


async def _worker(queue: asyncio.Queue) -> None:
    while True:
        # Everything queued meanwhile goes out together, in the order it was queued.
        queued = [await queue.get()]
        while not queue.empty() and len(queued) < PUBLISH_BATCH:
            queued.append(queue.get_nowait())
        pending: list[tuple[list[int], dict]] = []
        for items in queued:
            if isinstance(items, asyncio.Future):
                await publish(pending)
                pending = []
                if not items.done():
                    items.set_result(None)  # everything queued before it is published
            else:
                pending.extend(items)
        await publish(pending)


def published() -> asyncio.Future | None:
    """A future that is done once every event queued so far on this loop has been
    published; None where nothing is queued on the running loop (no server loop)."""
    loop, queue = _loop, _queue
    if queue is None or loop is not asyncio.get_running_loop():
        return None
    marker: asyncio.Future = loop.create_future()
    _enqueue(queue, marker)
    return marker


async def flush() -> None:
    """Wait until every event queued so far on this loop has been published.

    A send is acknowledged only after this: a process killed after the ack has
    published the message already, and one killed before it has not acknowledged it,
    so the client sends it again (same `client_id`: stored once)."""
    marker = published()
    if marker is not None:
        await marker


def flush_sync() -> None:
    """`flush` for sync code running under the server (Django's sync views)."""
    loop = _loop
    if loop is None or not loop.is_running():
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(flush)()


def bind_loop() -> None:
    """Make the running event loop the one that publishes. Call from async code of the
    server (the ASGI application does, on every connection)."""
    global _loop, _queue, _worker_task
    loop = asyncio.get_running_loop()
    if _loop is loop:
        return
    with _state_lock:
        if _loop is not loop:
            queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_LIMIT)
            _worker_task = loop.create_task(_worker(queue))
            _loop, _queue = loop, queue


def _enqueue(queue: asyncio.Queue, entry: list[tuple[list[int], dict]] | asyncio.Future) -> None:
    try:
        queue.put_nowait(entry)
    except asyncio.QueueFull:
        logger.error("delivery queue full; dropping events (clients will catch up with sync)")
        if isinstance(entry, asyncio.Future) and not entry.done():
            # Whoever waits for it must not take its events for published.
            entry.set_exception(DeliveryQueueFull())


def deliver(*, user_ids: list[int], event: dict) -> None:
    """Send `event` to every socket of these users. Never raises."""
    deliver_many(items=[(user_ids, event)])


def deliver_many(*, items: list[tuple[list[int], dict]]) -> None:
    """`deliver` for many (users, event) items, published in this order. Never raises."""
    loop, queue = _loop, _queue
    if loop is not None and queue is not None and loop.is_running() and not loop.is_closed():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _enqueue(queue, items)
        else:
            loop.call_soon_threadsafe(_enqueue, queue, items)
        return
    try:
        async_to_sync(publish)(items)
    except Exception:
        logger.exception("delivery failed")


class BindDeliveryLoop:
    """ASGI middleware: binds the server's event loop for `deliver` on first use."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        bind_loop()
        return await self.inner(scope, receive, send)
