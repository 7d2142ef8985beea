"""The Telegram bot (`manage.py runbot`): links chats to accounts, unlinks them.

Long polling with aiogram. It keeps running when Telegram or the network fails:
aiogram retries `getUpdates` with a backoff by itself, and `run_until_stopped()`
restarts polling (with its own backoff) when anything else ends it, e.g. `getMe`
failing at startup. SIGINT/SIGTERM stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from aiogram import Bot, Dispatcher, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import Message
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from notifications import services, telegram

logger = logging.getLogger(__name__)

# Seconds Telegram holds one getUpdates open when there is nothing new.
POLLING_TIMEOUT = 25
MAX_RESTART_DELAY = 60.0


def _settings_url() -> str:
    return f"{settings.SITE_URL}/settings/"


def _how_to_link() -> str:
    return (
        "To get your messenger notifications here, open "
        f"{_settings_url()} , press “Link Telegram” and follow the link it gives you "
        "(it is valid for 10 minutes)."
    )


HELP = (
    "I tell you about messenger messages that arrive while you are offline.\n\n"
    "/start &lt;code&gt; — link this chat (use the link from the settings page)\n"
    "/stop — unlink this chat, no more notifications\n"
    "/help — this message"
)

_INVALID = {
    "unknown": "This link is not valid. Get a new one from the settings page: {url}",
    "used": "This link was already used. Get a new one from the settings page: {url}",
    "expired": "This link has expired (links are valid for 10 minutes). Get a new one: {url}",
}


def _db(func):
    """Run an ORM call from the event loop, on fresh connections like a request would."""

    def call(*args, **kwargs):
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=True)


async def start_with_token(message: Message, command: CommandObject) -> None:
    if message.chat.type != "private":
        await message.answer("Please link me in a private chat with me, not in a group.")
        return
    try:
        user = await _db(services.telegram_link_redeem)(token=command.args or "", chat_id=message.chat.id)
    except services.LinkTokenInvalid as exc:
        await message.answer(_INVALID[exc.reason].format(url=_settings_url()))
        return
    await message.answer(
        f"Linked to <b>{telegram_escape(user.username)}</b>. I will tell you here about messages "
        "that arrive while you are offline. /stop unlinks."
    )


async def start_bare(message: Message) -> None:
    await message.answer(_how_to_link())


async def help_command(message: Message) -> None:
    await message.answer(f"{HELP}\n\n{_how_to_link()}")


async def stop_command(message: Message) -> None:
    user = await _db(services.telegram_unlink_chat)(chat_id=message.chat.id)
    if user is None:
        await message.answer("This chat is not linked to any account.")
    else:
        await message.answer("Unlinked: no more notifications here. You can link again from the settings page.")


async def anything_else(message: Message) -> None:
    await message.answer("I only understand /start, /stop and /help.")


def telegram_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_router() -> Router:
    router = Router(name="notifications")
    # Order matters: the first handler whose filters match answers.
    router.message.register(start_with_token, CommandStart(deep_link=True))
    router.message.register(start_bare, CommandStart())
    router.message.register(help_command, Command("help"))
    router.message.register(stop_command, Command("stop"))
    router.message.register(anything_else)
    return router


def build_dispatcher() -> Dispatcher:
    dispatcher = Dispatcher()
    dispatcher.include_router(build_router())
    dispatcher.startup.register(_on_startup)
    return dispatcher


async def _on_startup(bot: Bot) -> None:
    # Polling and a webhook exclude each other; a leftover webhook would make every
    # getUpdates fail with 409.
    await bot.delete_webhook(drop_pending_updates=False)


async def run_until_stopped(stop: asyncio.Event | None = None) -> None:
    """Poll until `stop` is set (by default: until SIGINT or SIGTERM)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    dispatcher = build_dispatcher()
    delay = 1.0
    while not stop.is_set():
        started = time.monotonic()
        bot = telegram.make_bot()
        polling = asyncio.create_task(
            dispatcher.start_polling(
                bot, handle_signals=False, polling_timeout=POLLING_TIMEOUT, allowed_updates=["message"]
            )
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({polling, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await polling
            break
        stopping.cancel()
        error = polling.exception()
        with contextlib.suppress(Exception):
            await bot.session.close()
        if time.monotonic() - started > MAX_RESTART_DELAY:
            delay = 1.0
        reason = f"{type(error).__name__}: {error}" if error else "no error"
        logger.error("bot: polling ended (%s); restarting in %.0fs", reason, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, MAX_RESTART_DELAY)
    logger.info("bot: stopped")
