"""Telling conversation partners when someone comes online or goes offline.

`accounts.presence` knows who is online; this module knows who cares (everyone who
shares a conversation with them) and sends them `presence` frames. A background sweep
in every web process reports users whose connections all expired without closing (a
crashed process); `presence_sweep` hands each such user to exactly one process.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from accounts import presence
from accounts.models import User
from messaging import delivery, recovery
from messaging.selectors import conversation_peer_ids
from messaging.serializers import iso_utc

logger = logging.getLogger(__name__)

_sweepers: dict[int, asyncio.Task] = {}


def _event(user: User, online: bool) -> dict:
    return {"type": "chat.presence", "user": user.username, "online": online, "last_seen": iso_utc(user.last_seen)}


@database_sync_to_async
def _presence_event(user_id: int, online: bool, user: User | None) -> tuple[list[int], dict] | None:
    if user is None:
        user = User.objects.filter(pk=user_id).only("username", "last_seen").first()
        if user is None:
            return None
    return conversation_peer_ids(user_id=user_id), _event(user, online)


async def announce(*, user_id: int, online: bool, user: User | None = None, peer_ids: list[int] | None = None) -> None:
    """Tell the user's conversation partners, with one Redis pipeline. `user` and
    `peer_ids`, when the caller has them loaded (a socket that just connected), save
    reading them again."""
    if user is not None and peer_ids is not None:
        event = _event(user, online)
    else:
        found = await _presence_event(user_id, online, user)
        if found is None:
            return
        peer_ids, event = found
    await delivery.publish([(peer_ids, event)])


async def _sweep_forever() -> None:
    interval = max(1.0, settings.PRESENCE_TIMEOUT_SECONDS / 4)
    failed = False
    while True:
        await asyncio.sleep(interval)
        try:
            gone = await database_sync_to_async(presence.presence_sweep)()
        except Exception:
            logger.exception("presence sweep failed")
            failed = True
            continue
        if failed:  # Redis is back: sockets may have missed messages meanwhile
            failed = False
            asyncio.get_running_loop().create_task(recovery.catch_up_all())
        try:
            for user_id in gone:
                await announce(user_id=user_id, online=False)
        except Exception:
            logger.exception("presence announcement failed")


def ensure_sweeper() -> None:
    """Start this process's sweep on its event loop, once."""
    loop = asyncio.get_running_loop()
    task = _sweepers.get(id(loop))
    if task is None or task.done():
        _sweepers[id(loop)] = loop.create_task(_sweep_forever())
