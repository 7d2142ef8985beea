"""The Redis channel layer: channels-redis' pub/sub layer, plus `group_send_many`.

A batch of sends publishes an event to every user it touches. One `group_send` each
is one Redis round trip each, awaited in turn under the shard's lock, and was a
quarter of a busy server's CPU; `group_send_many` publishes them all with one
pipeline per shard, in order. It reaches into channels-redis' shard objects
(`_get_shard`, `_lock`, `_ensure_redis`, `_redis`), so channels-redis is pinned and
chatproject/tests/test_channel_layer.py checks this against the real thing.
"""

from __future__ import annotations

from channels_redis.pubsub import RedisPubSubChannelLayer


class ChatChannelLayer(RedisPubSubChannelLayer):
    async def group_send_many(self, messages: list[tuple[str, dict]]) -> None:
        """`group_send(group, message)` for each pair, in order."""
        layer = self._get_layer()
        by_shard: dict = {}
        for group, message in messages:
            channel = layer._get_group_channel_name(group)
            by_shard.setdefault(layer._get_shard(channel), []).append((channel, self.serialize(message)))
        for shard, publishes in by_shard.items():
            async with shard._lock:
                shard._ensure_redis()
                pipe = shard._redis.pipeline(transaction=False)
                for channel, data in publishes:
                    pipe.publish(channel, data)
                await pipe.execute()
