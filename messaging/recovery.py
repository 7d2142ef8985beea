"""After Redis comes back, every socket catches up on what pub/sub dropped meanwhile.

Redis pub/sub keeps nothing for a subscriber that is away: events published while
Redis was down, or while this process was still subscribing again after it came back,
never arrive. Such a lost message is normally recovered with the next one (its `prev`
shows the gap, messaging.ordering), but a socket that receives nothing more would not
see it. So each process notices when Redis is back (its presence sweep fails, then
works again: messaging.presence_events) and, once the channel layer has had time to
subscribe again, has each of its sockets that is behind its user's delivery cursor
read what it is missing from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from channels.db import database_sync_to_async

from messaging.models import DeliveryCursor

logger = logging.getLogger(__name__)

# The channel layer tries to reconnect every second (channels_redis pubsub).
RESUBSCRIBE_GRACE_SECONDS = 3.0

_sockets: weakref.WeakSet[Any] = weakref.WeakSet()


def register(socket: Any) -> None:
    """A socket that can `catch_up()`, with `user` and `in_order.seen`."""
    _sockets.add(socket)


def unregister(socket: Any) -> None:
    _sockets.discard(socket)


@database_sync_to_async
def _cursors(user_ids: set[int]) -> dict[int, int]:
    return dict(DeliveryCursor.objects.filter(user_id__in=user_ids).values_list("user_id", "last_message_id"))


async def catch_up_all(*, grace: float = RESUBSCRIBE_GRACE_SECONDS) -> int:
    """Have every socket of this process that missed messages read them. Returns how
    many sockets caught up."""
    await asyncio.sleep(grace)
    sockets = list(_sockets)
    if not sockets:
        return 0
    cursors = await _cursors({socket.user.pk for socket in sockets})
    behind = [s for s in sockets if cursors.get(s.user.pk, 0) > s.in_order.seen]
    for socket in behind:
        try:
            await socket.catch_up()
        except Exception:
            logger.exception("catching up user %s failed", socket.user.pk)
    logger.info("after Redis came back: %d of %d socket(s) caught up", len(behind), len(sockets))
    return len(behind)
