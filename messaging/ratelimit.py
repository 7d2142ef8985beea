"""The per-user send rate (`CHAT_RATE_LIMIT`, e.g. 30 messages per 10 s), counted in
the shared cache so that WebSocket and REST sends on every process count together.

A fixed window: cheap and shared; a burst may straddle two windows. With Redis the
counts of a whole batch of sends are taken by one Lua call."""

import logging
import math
import time
from functools import cache as memoize

from django.conf import settings
from django.core.cache import cache

from messaging.errors import RateLimited

logger = logging.getLogger(__name__)

# KEYS: one counter per user. ARGV: the window's ttl, then each user's count. Returns
# each counter's new total. One command for a whole batch, where a pipeline of
# INCRBY + EXPIRE per user cost a tenth of a busy server's CPU in redis-py.
_TAKE = """
local totals = {}
for i, key in ipairs(KEYS) do
  local total = redis.call('INCRBY', key, ARGV[i + 1])
  if total == tonumber(ARGV[i + 1]) then redis.call('EXPIRE', key, ARGV[1]) end
  totals[i] = total
end
return totals
"""


def _key(user_id: int, window_index: int) -> str:
    return f"chat:rate:send:{user_id}:{window_index}"


def send_rate_take_many(*, counts: dict[int, int]) -> tuple[dict[int, int], RateLimited]:
    """Count `counts[user_id]` sends for each user. Returns how many of each user's
    sends are allowed (the first ones), and the error for the rest."""
    limit, window = settings.CHAT_RATE_LIMIT
    now = time.time()
    window_index = int(now // window)
    retry_after = max(1, math.ceil((window_index + 1) * window - now))
    error = RateLimited(f"Too many messages: at most {limit} per {window} s.", retry_after=retry_after)
    if settings.REDIS_URL:
        try:
            totals = _incr_redis(counts, window_index, window)
        except Exception:
            # Redis is down: PostgreSQL still stores sends, so they are not refused for
            # want of a counter; the limit applies again once Redis is back.
            logger.warning("send rate not counted: Redis unavailable", exc_info=True)
            totals = dict(counts)
    else:
        totals = {user_id: _incr_cache(_key(user_id, window_index), n, window) for user_id, n in counts.items()}
    allowed = {user_id: max(0, min(n, limit - (totals[user_id] - n))) for user_id, n in counts.items()}
    return allowed, error


@memoize
def _take_script():
    from django_redis import get_redis_connection

    return get_redis_connection("default").register_script(_TAKE)


def _incr_redis(counts: dict[int, int], window_index: int, window: int) -> dict[int, int]:
    user_ids = list(counts)
    totals = _take_script()(
        keys=[cache.make_key(_key(user_id, window_index)) for user_id in user_ids],
        args=[window + 1, *(counts[user_id] for user_id in user_ids)],
    )
    return {user_id: int(total) for user_id, total in zip(user_ids, totals, strict=True)}


def _incr_cache(key: str, count: int, window: int) -> int:
    cache.add(key, 0, timeout=window + 1)
    try:
        return cache.incr(key, count)
    except ValueError:  # expired between add and incr
        cache.add(key, count, timeout=window + 1)
        return count
