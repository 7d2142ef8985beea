"""Fixtures of the notifications tests: the fake Bot API server and a bot token."""

import pytest

from notifications.models import TelegramLink
from tests.fake_telegram import FakeTelegram

BOT_TOKEN = "123456:TEST-fake-token_for-tests"


@pytest.fixture(scope="session")
def fake_telegram_server():
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def fake_telegram(fake_telegram_server, settings):
    """The fake Bot API, fresh for this test, with the bot configured to use it."""
    fake_telegram_server.reset()
    settings.TELEGRAM_BOT_TOKEN = BOT_TOKEN
    settings.TELEGRAM_BOT_USERNAME = ""
    settings.TELEGRAM_API_BASE = fake_telegram_server.base_url
    yield fake_telegram_server
    fake_telegram_server.reset()


def link(user, chat_id: int, *, muted: bool = False) -> TelegramLink:
    link, _ = TelegramLink.objects.update_or_create(user=user, defaults={"chat_id": chat_id, "muted": muted})
    return link
