"""The one place that talks to the Telegram Bot API.

Everything else calls `send_message()` / `bot_username()` (sync, for views and Celery
tasks) or builds its bot with `make_bot()` (the long-polling bot). Failures come out
sorted by what the caller should do about them:

- `RetryLater`: flood control (429, with Telegram's `retry_after`), Telegram's 5xx,
  the network, an answer that is not the Bot API's JSON. Try again later.
- `Unlink`: the chat is gone for us (403: the user blocked the bot; 400 "chat not
  found"). Stop notifying that chat.
- `GiveUp`: anything else (a bad request, a bad token). Retrying will not help.

`TELEGRAM_API_BASE` points every call at another Bot API server (the tests' fake).

aiogram is imported on first use, not with this module: importing it builds a few
hundred pydantic models (seconds of CPU), which web processes that never talk to
Telegram should not pay at startup. The Celery worker preloads it (`preload()`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache

if TYPE_CHECKING:
    from aiogram import Bot

logger = logging.getLogger(__name__)

_USERNAME_CACHE_KEY = "telegram:bot-username"
_USERNAME_CACHE_SECONDS = 24 * 3600


class TelegramError(Exception):
    """A Bot API call that did not succeed, sorted by what to do next."""


class RetryLater(TelegramError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Telegram's own wait (429); None: the caller picks a backoff.
        self.retry_after = retry_after


class Unlink(TelegramError):
    """The chat can no longer be written to: forget it."""


class GiveUp(TelegramError):
    """Retrying will not help."""


class NotConfigured(GiveUp):
    """TELEGRAM_BOT_TOKEN is not set."""


def is_configured() -> bool:
    return bool(settings.TELEGRAM_BOT_TOKEN)


def request_timeout() -> int:
    """Seconds one Bot API call (sendMessage, getMe) may take, connecting included
    (`TELEGRAM_REQUEST_TIMEOUT`). Bounds how long a notification can sit in `sending`
    while its worker lives."""
    return settings.TELEGRAM_REQUEST_TIMEOUT


def preload() -> None:
    """Import aiogram now rather than inside the first notification."""
    import aiogram.client.session.aiohttp
    import aiogram.exceptions  # noqa: F401


def make_bot() -> Bot:
    """A `Bot` for the configured token and API server. The caller closes its session
    (`await bot.session.close()`)."""
    from aiogram import Bot
    from aiogram.client.default import DefaultBotProperties
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.enums import ParseMode

    if not is_configured():
        raise NotConfigured("TELEGRAM_BOT_TOKEN is not set")
    base = settings.TELEGRAM_API_BASE
    api = TelegramAPIServer.from_base(base) if base else None
    timeout = request_timeout()
    session = AiohttpSession(api=api, timeout=timeout) if api else AiohttpSession(timeout=timeout)
    return Bot(
        settings.TELEGRAM_BOT_TOKEN,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


def classify(exc: Exception) -> TelegramError:
    """Sort an aiogram failure into RetryLater / Unlink / GiveUp."""
    from aiogram.exceptions import (
        AiogramError,
        ClientDecodeError,
        TelegramAPIError,
        TelegramBadRequest,
        TelegramForbiddenError,
        TelegramNetworkError,
        TelegramRetryAfter,
        TelegramServerError,
    )

    if isinstance(exc, TelegramRetryAfter):
        return RetryLater(f"flood control: {exc.message}", retry_after=float(exc.retry_after))
    if isinstance(exc, TelegramForbiddenError):
        return Unlink(f"forbidden: {exc.message}")
    if isinstance(exc, TelegramBadRequest) and "chat not found" in exc.message.lower():
        return Unlink(f"chat not found: {exc.message}")
    if isinstance(exc, TelegramServerError | TelegramNetworkError):
        return RetryLater(f"{type(exc).__name__}: {exc.message}")
    if isinstance(exc, ClientDecodeError):
        # e.g. a proxy's HTML error page instead of the Bot API's JSON.
        return RetryLater(f"undecodable answer: {exc.message}")
    if isinstance(exc, TelegramAPIError):
        return GiveUp(f"{type(exc).__name__}: {exc.message}")
    if isinstance(exc, AiogramError | OSError | TimeoutError):
        return RetryLater(f"{type(exc).__name__}: {exc}")
    return GiveUp(f"{type(exc).__name__}: {exc}")


async def _call(coro_factory) -> object:
    bot = make_bot()
    try:
        return await coro_factory(bot)
    except Exception as exc:
        raise classify(exc) from exc
    finally:
        await bot.session.close()


def send_message(*, chat_id: int, text: str) -> None:
    """Send an HTML-formatted message. Raises RetryLater, Unlink or GiveUp."""
    asyncio.run(_call(lambda bot: bot.send_message(chat_id=chat_id, text=text)))


def bot_username() -> str:
    """The bot's @username for deep links: TELEGRAM_BOT_USERNAME, or asked from getMe
    once and cached for every process. Raises RetryLater or GiveUp."""
    if settings.TELEGRAM_BOT_USERNAME:
        return settings.TELEGRAM_BOT_USERNAME.lstrip("@")
    username = cache.get(_USERNAME_CACHE_KEY)
    if username:
        return username
    # Short: a web request waits for it (once; then it is cached).
    me = asyncio.run(_call(lambda bot: bot.get_me(request_timeout=5)))
    if not me.username:
        raise GiveUp("getMe returned no username")
    cache.set(_USERNAME_CACHE_KEY, me.username, _USERNAME_CACHE_SECONDS)
    logger.info("telegram: bot username is @%s (from getMe)", me.username)
    return me.username


def deep_link(token: str) -> str:
    return f"https://t.me/{bot_username()}?start={token}"
