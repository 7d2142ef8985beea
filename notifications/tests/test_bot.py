"""The bot's answers, fed updates in process and answering through the fake Bot API."""

import time

import pytest
from aiogram.types import Update
from asgiref.sync import sync_to_async
from django.db import connections

from notifications import bot, telegram
from notifications.models import TelegramLink, TelegramLinkToken
from notifications.services import link_token_create
from notifications.tests.conftest import link

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = 777001


@pytest.fixture(autouse=True)
async def _close_worker_thread_connections():
    yield
    # The ORM ran on sync_to_async's thread; its connection would keep the test
    # database from being dropped.
    await sync_to_async(connections.close_all)()


def update(text: str, *, chat_id: int = CHAT, chat_type: str = "private") -> Update:
    entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text.startswith("/") else None
    return Update.model_validate(
        {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": chat_type},
                "from": {"id": chat_id, "is_bot": False, "first_name": "T"},
                "text": text,
                "entities": entities,
            },
        }
    )


async def feed(text: str, **kwargs) -> None:
    tg_bot = telegram.make_bot()
    try:
        await bot.build_dispatcher().feed_update(tg_bot, update(text, **kwargs))
    finally:
        await tg_bot.session.close()


def last_answer(fake, chat_id: int = CHAT) -> str:
    return fake.messages_to(chat_id)[-1].text


async def test_start_with_a_valid_token_links_the_chat_and_says_so(fake_telegram, alice):
    issued = await sync_to_async(link_token_create)(user=alice)
    await feed(f"/start {issued.token}")
    assert "Linked to <b>alice</b>" in last_answer(fake_telegram)
    assert await TelegramLink.objects.filter(user=alice, chat_id=CHAT).aexists()


async def test_start_with_a_used_token_says_it_was_used(fake_telegram, alice):
    issued = await sync_to_async(link_token_create)(user=alice)
    await feed(f"/start {issued.token}")
    await feed(f"/start {issued.token}", chat_id=CHAT + 1)
    assert "already used" in last_answer(fake_telegram, CHAT + 1)
    assert not await TelegramLink.objects.filter(chat_id=CHAT + 1).aexists()


async def test_start_with_an_expired_token_says_it_expired(fake_telegram, alice):
    from django.utils import timezone

    issued = await sync_to_async(link_token_create)(user=alice)
    await TelegramLinkToken.objects.aupdate(expires_at=timezone.now())
    await feed(f"/start {issued.token}")
    assert "expired" in last_answer(fake_telegram)


async def test_start_with_an_unknown_token_says_it_is_not_valid(fake_telegram, settings):
    await feed("/start bogus-token")
    assert "not valid" in last_answer(fake_telegram)
    assert f"{settings.SITE_URL}/settings/" in last_answer(fake_telegram)


async def test_bare_start_and_help_explain_how_to_link_from_settings(fake_telegram, settings):
    await feed("/start")
    assert f"{settings.SITE_URL}/settings/" in last_answer(fake_telegram)
    await feed("/help")
    answer = last_answer(fake_telegram)
    assert "/stop" in answer and f"{settings.SITE_URL}/settings/" in answer


async def test_stop_unlinks_the_chat(fake_telegram, alice):
    await sync_to_async(link)(alice, CHAT)
    await feed("/stop")
    assert "Unlinked" in last_answer(fake_telegram)
    assert (await TelegramLink.objects.aget(user=alice)).chat_id is None
    await feed("/stop")
    assert "not linked" in last_answer(fake_telegram)


async def test_a_group_chat_is_not_linked(fake_telegram, alice):
    issued = await sync_to_async(link_token_create)(user=alice)
    await feed(f"/start {issued.token}", chat_type="group")
    assert "private chat" in last_answer(fake_telegram)
    assert not await TelegramLink.objects.filter(user=alice, chat_id__isnull=False).aexists()


async def test_the_bot_keeps_running_through_telegram_failures(fake_telegram, alice):
    import asyncio

    # getMe fails at startup (polling cannot even begin), then getUpdates fails too.
    fake_telegram.fail_next(500, times=2, method="getMe")
    fake_telegram.fail_next(502, times=2, method="getUpdates")
    fake_telegram.push_message(chat_id=CHAT, text="/help")
    stop = asyncio.Event()
    polling = asyncio.create_task(bot.run_until_stopped(stop))
    try:
        for _ in range(300):
            if fake_telegram.messages_to(CHAT) or polling.done():
                break
            await asyncio.sleep(0.1)
        assert "/stop" in last_answer(fake_telegram)
    finally:
        stop.set()
        await asyncio.wait_for(polling, 30)
    assert fake_telegram.calls.count("getMe") >= 3


def test_runbot_refuses_to_start_without_a_token(settings):
    from django.core.management import CommandError, call_command

    settings.TELEGRAM_BOT_TOKEN = ""
    with pytest.raises(CommandError, match="TELEGRAM_BOT_TOKEN"):
        call_command("runbot")
