"""The recent-history cache: the newest `HISTORY_CACHE_SIZE` messages of each
conversation, as the API serves them.

It must never be wrong, so it only ever holds a true suffix of the conversation:
- a send adds its message only to a cache entry that already exists (never starts a
  partial one);
- a miss fills the entry from PostgreSQL, then reads once more for messages committed
  during the fill, so a send that committed meanwhile is not lost (messages of one
  conversation commit in id order, see `services._lock_users`);
- deleting or editing a message (admin) drops the entry; it refills on next read.

With Redis the entry is a sorted set (score: message id), updated atomically by Lua so
that any number of processes can add at once; its key names the database
(`_database_epoch`), so that entries that outlived their database (restored from a
backup, or made again as the tests and the benchmark do) are not read. Without Redis
(embedded mode, one process) a dict under a lock does the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache

import orjson
from django.conf import settings
from django.db import connection

from messaging.models import Message

HISTORY_CACHE_SIZE = 50
HISTORY_CACHE_TTL = 24 * 3600

# KEYS: entries. ARGV: size, ttl, then for each entry the number of its messages and
# their (id, json) pairs. Adds only to the entries that exist. One command for a whole
# batch of sends.
_APPEND = """
local size, ttl, at = tonumber(ARGV[1]), ARGV[2], 3
for _, key in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  if redis.call('EXISTS', key) == 1 then
    for i = at + 1, at + 2 * count, 2 do redis.call('ZADD', key, ARGV[i], ARGV[i + 1]) end
    redis.call('ZREMRANGEBYRANK', key, 0, -size - 1)
    redis.call('EXPIRE', key, ttl)
  end
  at = at + 1 + 2 * count
end
return 1
"""

# KEYS: entry. ARGV: size, ttl, then (id, json) pairs. Creates or extends the entry;
# a placeholder member keeps an empty conversation's entry present.
_FILL = """
redis.call('ZADD', KEYS[1], 0, '')
for i = 3, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[1]) - 2)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def _database_epoch() -> str:
    """What tells this database from any other that had the same conversation ids:
    when its messaging tables were first migrated (new in a new database or cluster)
    and, on PostgreSQL, the OID of the message table (new whenever the table is made
    again, as `pg_restore --clean` does). A cache entry of a database that no longer
    exists is then never taken for this one's."""
    from django.db.migrations.recorder import MigrationRecorder

    applied = (
        MigrationRecorder(connection)
        .migration_qs.filter(app="messaging", name="0001_initial")
        .values_list("applied", flat=True)
        .first()
    )
    epoch = f"{applied.timestamp():.6f}" if applied else "0"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s::regclass::oid", [Message._meta.db_table])
            epoch = f"{cursor.fetchone()[0]}.{epoch}"
    return epoch


def _pairs(messages: list[dict]) -> list:
    args: list = []
    for message in messages:
        args += [message["id"], orjson.dumps(message)]
    return args


class _RedisHistory:
    def __init__(self) -> None:
        from django_redis import get_redis_connection

        self.redis = get_redis_connection("default")
        self.prefix = f"chat:history:{_database_epoch()}:"
        self.append_script = self.redis.register_script(_APPEND)
        self.fill_script = self.redis.register_script(_FILL)

    def _key(self, conversation_id: int) -> str:
        return f"{self.prefix}{conversation_id}"

    def get(self, conversation_id: int) -> list[dict] | None:
        # An entry is never empty (a fill adds the placeholder, nothing removes the
        # last message), so no members means no entry.
        members = self.redis.zrevrange(self._key(conversation_id), 0, -1)
        if not members:
            return None
        return [orjson.loads(m) for m in members if m]

    def append(self, conversation_id: int, messages: list[dict]) -> None:
        self.append_many({conversation_id: messages})

    def append_many(self, by_conversation: dict[int, list[dict]]) -> None:
        """One command for every conversation of a batch."""
        if not by_conversation:
            return
        args: list = [HISTORY_CACHE_SIZE, HISTORY_CACHE_TTL]
        for messages in by_conversation.values():
            args += [len(messages), *_pairs(messages)]
        self.append_script(keys=[self._key(c) for c in by_conversation], args=args)

    def fill(self, conversation_id: int, messages: list[dict]) -> None:
        args = [HISTORY_CACHE_SIZE, HISTORY_CACHE_TTL, *_pairs(messages)]
        self.fill_script(keys=[self._key(conversation_id)], args=args)

    def drop(self, conversation_id: int) -> None:
        self.redis.delete(self._key(conversation_id))


class _LocalHistory:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[int, dict[int, dict]] = {}

    def get(self, conversation_id: int) -> list[dict] | None:
        with self.lock:
            entry = self.entries.get(conversation_id)
            return None if entry is None else [entry[i] for i in sorted(entry, reverse=True)]

    def _add(self, entry: dict[int, dict], messages: list[dict]) -> None:
        for message in messages:
            entry[message["id"]] = message
        for old in sorted(entry)[:-HISTORY_CACHE_SIZE]:
            del entry[old]

    def append(self, conversation_id: int, messages: list[dict]) -> None:
        with self.lock:
            if conversation_id in self.entries:
                self._add(self.entries[conversation_id], messages)

    def append_many(self, by_conversation: dict[int, list[dict]]) -> None:
        for conversation_id, messages in by_conversation.items():
            self.append(conversation_id, messages)

    def fill(self, conversation_id: int, messages: list[dict]) -> None:
        with self.lock:
            self._add(self.entries.setdefault(conversation_id, {}), messages)

    def drop(self, conversation_id: int) -> None:
        with self.lock:
            self.entries.pop(conversation_id, None)


@cache
def _backend() -> _RedisHistory | _LocalHistory:
    return _RedisHistory() if settings.REDIS_URL else _LocalHistory()


def history_cache_reset() -> None:
    """Tests only: forget the in-process backend."""
    _backend.cache_clear()


def history_cached_add_many(*, by_conversation: dict[int, list[dict]]) -> None:
    """Extend the cached pages of these conversations; call after the messages
    committed."""
    _backend().append_many(by_conversation)


def history_cached_drop(*, conversation_id: int) -> None:
    _backend().drop(conversation_id)


def history_recent(*, conversation_id: int, load: Callable[[int], list[dict]]) -> list[dict]:
    """The newest messages of the conversation, newest first, from the cache or, on a
    miss, from `load(after_id)` (messages with id > after_id, any order, at most
    HISTORY_CACHE_SIZE newest), which then fills the cache."""
    backend = _backend()
    cached = backend.get(conversation_id)
    if cached is not None:
        return cached
    messages = load(0)
    backend.fill(conversation_id, messages)
    newest = max((m["id"] for m in messages), default=0)
    # Sends that committed after `load(0)` but before the entry existed added nothing.
    late = load(newest)
    if late:
        backend.fill(conversation_id, late)
    return backend.get(conversation_id) or []
