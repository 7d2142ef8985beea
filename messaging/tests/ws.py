"""Helpers to talk to the real ASGI application through Channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json

from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from chatproject.asgi import application


class Client:
    """One socket of one user."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.ws = communicator
        self.ready: dict = {}

    async def send(self, frame: dict | str) -> None:
        await self.ws.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 3) -> dict:
        return json.loads(await self.ws.receive_from(timeout=timeout))

    async def recv_type(self, frame_type: str, timeout: float = 3) -> dict:
        """The next frame of this type, skipping `presence` frames and others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if frame["type"] == frame_type:
                return frame

    async def nothing(self, timeout: float = 0.3, ignore: tuple[str, ...] = ("presence",)) -> bool:
        """True when no frame (other than ignored ones) arrives within `timeout`.

        Uses `receive_nothing`, which unlike a timed-out receive does not cancel the
        application."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            if await self.ws.receive_nothing(timeout=remaining, interval=0.01):
                return True
            frame = await self.recv()
            if frame["type"] not in ignore:
                raise AssertionError(f"unexpected frame {frame}")
        return True

    async def close(self) -> None:
        await self.ws.disconnect()


async def connect(user, *, headers: list[tuple[bytes, bytes]] | None = None) -> Client:
    """A socket authenticated with an access token in the first frame, after `ready`."""
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers or [])
    connected, _ = await communicator.connect()
    assert connected
    client = Client(communicator)
    await client.send({"type": "auth", "token": str(AccessToken.for_user(user))})
    client.ready = await client.recv()
    assert client.ready["type"] == "ready", client.ready
    return client
