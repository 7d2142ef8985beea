"""The Bot API client sorts failures into retry later / unlink / give up."""

import pytest

from notifications import telegram
from notifications.services import notification_text
from tests.fake_telegram import BOT_USERNAME

CHAT = 123


def test_a_message_reaches_the_bot_api_as_html(fake_telegram):
    text = notification_text(sender_username="alice", count=1, last_body="<script>alert(1)</script> & <b>bold</b>")
    telegram.send_message(chat_id=CHAT, text=text)
    [sent] = fake_telegram.messages_to(CHAT)
    # Telegram reads the text as HTML: the app's own markup stays markup, the user's
    # text arrives as entities (a raw "<script>" or "&" would even be refused).
    assert sent.parse_mode == "HTML"
    assert sent.text == text
    assert "New message from <b>alice</b>:" in sent.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in sent.text
    assert "<script>" not in sent.text and "<b>bold" not in sent.text and " & " not in sent.text


def test_flood_control_is_retry_later_with_telegrams_wait(fake_telegram):
    fake_telegram.fail_next(429, retry_after=12)
    with pytest.raises(telegram.RetryLater) as error:
        telegram.send_message(chat_id=CHAT, text="hi")
    assert error.value.retry_after == 12


@pytest.mark.parametrize("status", [403, 400])
def test_a_blocked_bot_or_a_vanished_chat_is_unlink(fake_telegram, status):
    fake_telegram.fail_next(status)
    with pytest.raises(telegram.Unlink):
        telegram.send_message(chat_id=CHAT, text="hi")


def test_a_server_error_is_retry_later_without_a_wait(fake_telegram):
    fake_telegram.fail_next(500)
    with pytest.raises(telegram.RetryLater) as error:
        telegram.send_message(chat_id=CHAT, text="hi")
    assert error.value.retry_after is None


def test_an_unreachable_server_is_retry_later(fake_telegram, settings):
    settings.TELEGRAM_API_BASE = "http://127.0.0.1:9"
    with pytest.raises(telegram.RetryLater):
        telegram.send_message(chat_id=CHAT, text="hi")


def test_a_refused_token_is_give_up(fake_telegram):
    fake_telegram.fail_next(401)
    with pytest.raises(telegram.GiveUp):
        telegram.send_message(chat_id=CHAT, text="hi")


def test_without_a_token_nothing_is_called(fake_telegram, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    with pytest.raises(telegram.NotConfigured):
        telegram.send_message(chat_id=CHAT, text="hi")
    assert fake_telegram.calls == []


def test_the_deep_link_names_the_bot(fake_telegram):
    assert telegram.deep_link("abc") == f"https://t.me/{BOT_USERNAME}?start=abc"
