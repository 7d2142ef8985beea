"""WebSocket handshake security, as ASGI middleware in front of the consumer.

- `OriginCheckMiddleware` refuses a handshake whose `Origin` is present but not one of
  `ALLOWED_HOSTS` (cross-site WebSocket hijacking). Non-browser clients send no
  `Origin` and may connect, but they get no cookie authentication (see below).
- `WebSocketAuthMiddleware` puts the authenticated user in `scope["user"]` before the
  consumer runs. A browser is authenticated by its session cookie, and only when it
  sent an allowed `Origin`. Any other client is accepted, must send
  `{"type": "auth", "token": "<access token>"}` as its first frame within
  `AUTH_TIMEOUT_SECONDS`, and is closed with 4401 otherwise. The consumer then sees an
  ordinary connect of an authenticated user and never deals with tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.auth.models import AnonymousUser
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import TokenError

from accounts.authentication import JWTAuthentication
from messaging.selectors import socket_user

logger = logging.getLogger(__name__)

AUTH_TIMEOUT_SECONDS = 10
CLOSE_UNAUTHENTICATED = 4401


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


class OriginCheckMiddleware:
    """Like Channels' `AllowedHostsOriginValidator`, except that a missing `Origin`
    (a non-browser client) is let through; such connections never use cookies, so
    they go to `without_origin` when given (the stack without the cookie and session
    middleware: less work and memory per connection)."""

    def __init__(self, inner: Any, *, without_origin: Any = None) -> None:
        self.inner = inner
        self.without_origin = without_origin or inner
        self.validator = AllowedHostsOriginValidator(inner)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and _header(scope, b"origin") is None:
            return await self.without_origin(scope, receive, send)
        return await self.validator(scope, receive, send)


@database_sync_to_async
def _user_from_token(raw: str):
    """The active user an access token names, loaded with what the consumer needs
    (`messaging.selectors.socket_user`), with the REST API's checks
    (`accounts.authentication.JWTAuthentication`). A refresh token has the wrong token
    type."""
    auth = JWTAuthentication()
    try:
        token = auth.get_validated_token(raw)
        return auth.check_user(token, socket_user(user_id=auth.user_id(token)))
    except (AuthenticationFailed, TokenError):
        return None


def _token_from_frame(event: dict) -> str | None:
    text = event.get("text")
    if not text or len(text) > 8192:
        return None
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):  # deep nesting fits in 8 KiB
        return None
    if not isinstance(frame, dict) or frame.get("type") != "auth":
        return None
    token = frame.get("token")
    return token if isinstance(token, str) and token else None


class WebSocketAuthMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        scope = dict(scope)
        user = AnonymousUser()
        if _header(scope, b"origin") is not None and "session" in scope:
            user = await get_user(scope)
        if user.is_authenticated:
            scope["user"] = user
            return await self.inner(scope, receive, send)
        return await self._token_handshake(scope, receive, send)

    async def _token_handshake(self, scope: dict, receive: Any, send: Any) -> Any:
        event = await receive()
        if event["type"] != "websocket.connect":
            return None
        await send({"type": "websocket.accept"})
        try:
            event = await asyncio.wait_for(receive(), timeout=AUTH_TIMEOUT_SECONDS)
        except TimeoutError:
            await send({"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED})
            return None
        if event["type"] != "websocket.receive":
            return None  # the client went away
        token = _token_from_frame(event)
        # This frame stays suspended for the connection's life: keep no token in it.
        del event
        user = await _user_from_token(token) if token else None
        del token
        if user is None:
            await send({"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED})
            return None
        scope["user"] = user

        connect_replayed = False

        async def inner_receive() -> dict:
            nonlocal connect_replayed
            if not connect_replayed:
                connect_replayed = True
                return {"type": "websocket.connect"}
            return await receive()

        async def inner_send(message: dict) -> None:
            if message["type"] == "websocket.accept":
                return  # accepted above, before the auth frame could be read
            await send(message)

        return await self.inner(scope, inner_receive, inner_send)
