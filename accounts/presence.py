"""Who is online, counted per live connection.

A user is online while at least one of their connections is registered and has been
heard from within `PRESENCE_TIMEOUT_SECONDS`. Every connection has its own expiry, so a
server process that dies without closing anything stops counting once its
connections' expiries pass; `presence_sweep()` finds those users and reports them
offline exactly once, whichever process runs it.

With `REDIS_URL` the state is in Redis and shared by every process: a sorted set of
connection ids per user (score: expiry) and one sorted set of online users (score:
latest expiry). Without Redis (the embedded single-process mode) the same rules run
on an in-process table.

The consumer reports connections (`presence_open`, `presence_heartbeat`,
`presence_disconnect`); everyone else asks (`online_user_ids`, `is_online`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from functools import cache

from django.conf import settings
from django.utils import timezone

from accounts.models import User

_ONLINE_KEY = "chat:presence:online"


def _conns_key(user_id: int) -> str:
    return f"chat:presence:conns:{user_id}"


# KEYS: conns, online. ARGV: conn, now, expiry, ttl, user_id.
# Returns {1 when the user was offline before this connection was counted, the
# number of live connections}.
_CONNECT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local count = redis.call('ZCARD', KEYS[1])
local was = redis.call('ZSCORE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[2], 'GT', ARGV[3], ARGV[5])
if (not was) or tonumber(was) <= tonumber(ARGV[2]) then
  return {1, count}
end
return {0, count}
"""

# KEYS: conns, online. ARGV: conn ('' for none), now, user_id.
# Drops the connection (and any expired ones); returns 1 when the user thereby went
# offline. Only one caller ever gets 1 for one offline transition.
_DROP = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last == 0 then
  return redis.call('ZREM', KEYS[2], ARGV[3])
end
redis.call('ZADD', KEYS[2], last[2], ARGV[3])
return 0
"""


class _RedisPresence:
    def __init__(self) -> None:
        from django_redis import get_redis_connection

        self.redis = get_redis_connection("default")
        self.connect_script = self.redis.register_script(_CONNECT)
        self.drop_script = self.redis.register_script(_DROP)

    def connect(self, user_id: int, conn: str, now: float, timeout: int) -> tuple[bool, int]:
        keys = [_conns_key(user_id), _ONLINE_KEY]
        came_online, count = self.connect_script(keys=keys, args=[conn, now, now + timeout, timeout * 2, user_id])
        return bool(came_online), int(count)

    def drop(self, user_id: int, conn: str, now: float) -> bool:
        return bool(self.drop_script(keys=[_conns_key(user_id), _ONLINE_KEY], args=[conn, now, user_id]))

    def expired_user_ids(self, now: float) -> list[int]:
        return [int(uid) for uid in self.redis.zrangebyscore(_ONLINE_KEY, "-inf", now)]

    def online_user_ids(self, user_ids: list[int], now: float) -> set[int]:
        scores = self.redis.zmscore(_ONLINE_KEY, user_ids)
        return {uid for uid, score in zip(user_ids, scores, strict=True) if score is not None and score > now}


class _LocalPresence:
    """The same rules for the embedded, single-process mode."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conns: dict[int, dict[str, float]] = {}
        self.online: dict[int, float] = {}

    def connect(self, user_id: int, conn: str, now: float, timeout: int) -> tuple[bool, int]:
        with self.lock:
            conns = {c: exp for c, exp in self.conns.get(user_id, {}).items() if exp > now}
            conns[conn] = now + timeout
            self.conns[user_id] = conns
            was = self.online.get(user_id)
            self.online[user_id] = max(conns.values())
            return was is None or was <= now, len(conns)

    def drop(self, user_id: int, conn: str, now: float) -> bool:
        with self.lock:
            conns = {c: exp for c, exp in self.conns.get(user_id, {}).items() if exp > now and c != conn}
            if conns:
                self.conns[user_id] = conns
                self.online[user_id] = max(conns.values())
                return False
            self.conns.pop(user_id, None)
            return self.online.pop(user_id, None) is not None

    def expired_user_ids(self, now: float) -> list[int]:
        with self.lock:
            return [uid for uid, exp in self.online.items() if exp <= now]

    def online_user_ids(self, user_ids: list[int], now: float) -> set[int]:
        with self.lock:
            return {uid for uid in user_ids if self.online.get(uid, 0) > now}


@cache
def _backend() -> _RedisPresence | _LocalPresence:
    return _RedisPresence() if settings.REDIS_URL else _LocalPresence()


def _timeout() -> int:
    return settings.PRESENCE_TIMEOUT_SECONDS


def presence_open(*, user_id: int, connection_id: str) -> tuple[bool, int]:
    """Count a new live connection. Returns whether the user just came online, and how
    many live connections they now have (this one included)."""
    return _backend().connect(user_id, connection_id, time.time(), _timeout())


def presence_connect(*, user_id: int, connection_id: str) -> bool:
    """Count a new live connection. Returns True when the user just came online."""
    return presence_open(user_id=user_id, connection_id=connection_id)[0]


def presence_heartbeat(*, user_id: int, connection_id: str) -> bool:
    """Extend a connection's life. Returns True when the user had been counted offline
    meanwhile (their connection expired, e.g. Redis was flushed) and is online again."""
    return _backend().connect(user_id, connection_id, time.time(), _timeout())[0]


def presence_disconnect(*, user_id: int, connection_id: str) -> bool:
    """Forget a closed connection. Returns True when it was the user's last one; their
    `last_seen` is then stamped."""
    went_offline = _backend().drop(user_id, connection_id, time.time())
    if went_offline:
        User.objects.filter(pk=user_id).update(last_seen=timezone.now())
    return went_offline


def presence_sweep() -> list[int]:
    """Find users whose every connection expired without closing (a crashed server
    process, a lost network) and count them offline. Returns their ids; each id is
    returned by exactly one sweep, whichever process runs it."""
    backend = _backend()
    now = time.time()
    gone = [uid for uid in backend.expired_user_ids(now) if backend.drop(uid, "", now)]
    if gone:
        User.objects.filter(pk__in=gone).update(last_seen=timezone.now())
    return gone


def online_user_ids(user_ids: Iterable[int]) -> set[int]:
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return set()
    return _backend().online_user_ids(ids, time.time())


def is_online(user_id: int) -> bool:
    return user_id in online_user_ids([user_id])


def presence_reset() -> None:
    """Tests only: forget every connection."""
    _backend.cache_clear()
