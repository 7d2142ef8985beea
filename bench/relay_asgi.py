"""Baseline 1: a minimal Channels relay in the style of the Channels tutorial.

Same server (daphne), same settings and channel layer (`settings.CHANNEL_LAYERS`) as
the project, same frames (auth/ready/send/ack/message), but it stores nothing, checks
next to nothing and keeps no presence: the project's figures divided by this one's
show what storing, checking and acknowledging cost.

    daphne bench.relay_asgi:application
"""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.urls import path  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework_simplejwt.exceptions import TokenError  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken  # noqa: E402

User = get_user_model()

# username -> id; users are never renamed during a benchmark.
_user_ids: dict[str, int] = {}


async def _user_id(username: str) -> int | None:
    if username not in _user_ids:
        pk = await User.objects.filter(username=username).values_list("pk", flat=True).afirst()
        if pk is None:
            return None
        _user_ids[username] = pk
    return _user_ids[username]


class RelayConsumer(AsyncJsonWebsocketConsumer):
    user_id: int | None = None
    username = ""

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if self.user_id is None:
            await self.authenticate(content if kind == "auth" else {})
        elif kind == "send":
            await self.relay(content)
        elif kind == "ping":
            await self.send_json({"type": "pong"})

    async def authenticate(self, content: dict) -> None:
        try:
            token = AccessToken(content.get("token") or "")
            user = await User.objects.aget(pk=token["user_id"], is_active=True)
        except (TokenError, KeyError, User.DoesNotExist):
            await self.close(code=4401)
            return
        self.user_id, self.username = user.pk, user.username
        _user_ids[user.username] = user.pk
        await self.channel_layer.group_add(f"user.{user.pk}", self.channel_name)
        await self.send_json(
            {"type": "ready", "user": {"id": user.pk, "username": user.username}, "last_message_id": 0}
        )

    async def relay(self, content: dict) -> None:
        client_id = content.get("client_id")
        recipient_id = await _user_id(str(content.get("to", "")))
        if recipient_id is None:
            await self.send_json(
                {"type": "error", "code": "not_found", "detail": "No such user.", "client_id": client_id}
            )
            return
        message = {
            "id": None,  # nothing is stored, so there is no id
            "sender": self.username,
            "recipient": content["to"],
            "body": content.get("body", ""),
            "created_at": timezone.now().isoformat(),
            "client_id": client_id,
        }
        await self.send_json({"type": "ack", "client_id": client_id, "message": message})
        event = {"type": "chat.message", "message": message, "origin": self.channel_name}
        for group_user_id in {self.user_id, recipient_id}:
            await self.channel_layer.group_send(f"user.{group_user_id}", event)

    async def chat_message(self, event: dict) -> None:
        if event["origin"] != self.channel_name:
            await self.send_json({"type": "message", "message": event["message"]})

    async def disconnect(self, code: int) -> None:
        if self.user_id is not None:
            await self.channel_layer.group_discard(f"user.{self.user_id}", self.channel_name)


async def healthz(scope: dict, receive: Any, send: Any) -> None:
    """All the HTTP this relay serves: the benchmark's readiness probe."""
    ok = scope["path"] == "/healthz"
    await send(
        {"type": "http.response.start", "status": 200 if ok else 404, "headers": [(b"content-type", b"text/plain")]}
    )
    await send({"type": "http.response.body", "body": b"ok\n" if ok else b""})


application = ProtocolTypeRouter(
    {
        "http": healthz,
        "websocket": URLRouter([path("ws/chat/", RelayConsumer.as_asgi())]),
    }
)
