"""ChatChannelLayer against the real Redis: `group_send_many` relies on channels-redis
internals, so an upgrade that moves them fails here rather than in production."""

import asyncio
import uuid

import pytest
from django.conf import settings

from chatproject.channel_layer import ChatChannelLayer
from tests.procs import require_stack

pytestmark = pytest.mark.stack


@pytest.fixture
async def layer():
    require_stack()
    layer = ChatChannelLayer(hosts=[settings.REDIS_URL], prefix=f"test.layer.{uuid.uuid4().hex}")
    yield layer
    await layer.flush()


async def _receive_all(layer, channel: str, count: int) -> list[dict]:
    return [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(count)]


async def test_group_send_many_reaches_every_member_of_each_group_in_order(layer):
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("user.1", one)
    await layer.group_add("user.1", two)
    await layer.group_add("user.2", two)

    await layer.group_send_many(
        [
            ("user.1", {"type": "chat.messages", "n": 1}),
            ("user.2", {"type": "chat.messages", "n": 2}),
            ("user.1", {"type": "chat.messages", "n": 3}),
            ("user.3", {"type": "chat.messages", "n": 4}),  # nobody listens: no error
        ]
    )

    assert [m["n"] for m in await _receive_all(layer, one, 2)] == [1, 3]
    assert [m["n"] for m in await _receive_all(layer, two, 3)] == [1, 2, 3]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(one), 0.3)


async def test_group_send_many_with_nothing_to_send_does_nothing(layer):
    await layer.group_send_many([])
