"""The per-user send rate (`CHAT_RATE_LIMIT`, e.g. 30 messages per 10 s), counted in
the shared cache so that WebSocket and REST sends on every process count together."""

import math
import time

from django.conf import settings
from django.core.cache import cache

from messaging.errors import RateLimited


def send_rate_take(*, user_id: int, count: int = 1) -> tuple[int, RateLimited]:
    """Count `count` sends for the user. Returns how many of them are allowed (the
    first ones), and the error for the rest.

    A fixed window: cheap (one INCR per batch) and shared; a burst may straddle two
    windows."""
    limit, window = settings.CHAT_RATE_LIMIT
    now = time.time()
    window_index = int(now // window)
    key = f"chat:rate:send:{user_id}:{window_index}"
    cache.add(key, 0, timeout=window + 1)
    try:
        total = cache.incr(key, count)
    except ValueError:  # expired between add and incr
        cache.add(key, count, timeout=window + 1)
        total = count
    allowed = max(0, min(count, limit - (total - count)))
    retry_after = max(1, math.ceil((window_index + 1) * window - now))
    return allowed, RateLimited(f"Too many messages: at most {limit} per {window} s.", retry_after=retry_after)
