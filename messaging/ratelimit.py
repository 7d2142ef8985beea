"""The per-user send rate (`CHAT_RATE_LIMIT`, e.g. 30 messages per 10 s), counted in
the shared cache so that WebSocket and REST sends on every process count together.

A fixed window: cheap and shared; a burst may straddle two windows. With Redis the
counts of a whole batch of sends are taken in one round trip."""

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache

from messaging.errors import RateLimited

logger = logging.getLogger(__name__)


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


def _incr_redis(counts: dict[int, int], window_index: int, window: int) -> dict[int, int]:
    from django_redis import get_redis_connection

    pipe = get_redis_connection("default").pipeline(transaction=False)
    user_ids = list(counts)
    for user_id in user_ids:
        key = cache.make_key(_key(user_id, window_index))
        pipe.incrby(key, counts[user_id])
        pipe.expire(key, window + 1)
    results = pipe.execute()
    return {user_id: int(results[2 * i]) for i, user_id in enumerate(user_ids)}


def _incr_cache(key: str, count: int, window: int) -> int:
    cache.add(key, 0, timeout=window + 1)
    try:
        return cache.incr(key, count)
    except ValueError:  # expired between add and incr
        cache.add(key, count, timeout=window + 1)
        return count
