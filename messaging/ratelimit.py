"""The per-user send rate (`CHAT_RATE_LIMIT`, e.g. 30 messages per 10 s), counted in
the shared cache so that WebSocket and REST sends on every process count together."""

import math
import time

from django.conf import settings
from django.core.cache import cache

from messaging.errors import RateLimited


def send_rate_check(*, user_id: int) -> None:
    """Count one send for the user; raise `RateLimited` when over the limit.

    A fixed window: cheap (one INCR) and shared; a burst may straddle two windows."""
    limit, window = settings.CHAT_RATE_LIMIT
    now = time.time()
    window_index = int(now // window)
    key = f"chat:rate:send:{user_id}:{window_index}"
    cache.add(key, 0, timeout=window + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window + 1)
        count = 1
    if count > limit:
        retry_after = max(1, math.ceil((window_index + 1) * window - now))
        raise RateLimited(f"Too many messages: at most {limit} per {window} s.", retry_after=retry_after)
