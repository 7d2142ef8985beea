import re

import pytest
from django.test import Client

from notifications.models import Notification, TelegramLink
from notifications.tests.conftest import link
from tests.fake_telegram import BOT_USERNAME

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_settings_needs_login(client):
    response = client.get("/settings/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_settings_shows_not_linked_and_a_link_button(fake_telegram, browser):
    page = browser.get("/settings/").content.decode()
    assert "Not linked" in page
    assert 'action="/settings/telegram/link/"' in page
    assert "csrfmiddlewaretoken" in page


def test_link_button_shows_the_deep_link_and_an_inline_svg_qr_code(fake_telegram, browser):
    page = browser.post("/settings/telegram/link/").content.decode()
    assert re.search(rf'href="https://t\.me/{BOT_USERNAME}\?start=[A-Za-z0-9_-]+"', page)
    # Drawn by the server, inline: no image fetched from anywhere.
    svg = re.search(r'<figure class="qr">(<svg.*?</svg>)', page, re.S).group(1)
    assert "<path" in svg and "src=" not in svg and "<script" not in svg


def test_a_linked_user_sees_the_state_and_can_unlink(fake_telegram, browser, alice):
    link(alice, 4242)
    page = browser.get("/settings/").content.decode()
    assert "Linked" in page and 'action="/settings/telegram/unlink/"' in page
    response = browser.post("/settings/telegram/unlink/", follow=True)
    assert TelegramLink.objects.get(user=alice).chat_id is None
    assert "Telegram unlinked" in response.content.decode()


def test_the_mute_switch_turns_notifications_off_and_on(fake_telegram, browser, alice):
    browser.post("/settings/notifications/", {"muted": "on"})
    assert TelegramLink.objects.get(user=alice).muted is True
    assert "checked" in browser.get("/settings/").content.decode()
    browser.post("/settings/notifications/", {})
    assert TelegramLink.objects.get(user=alice).muted is False


def test_settings_forms_need_csrf(fake_telegram, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    for url in ("/settings/telegram/link/", "/settings/telegram/unlink/", "/settings/notifications/"):
        assert client.post(url).status_code == 403


def test_settings_shows_recent_notifications(fake_telegram, browser, alice, bob):
    Notification.objects.create(
        recipient=alice, sender=bob, chat_id=1, first_message_id=1, last_message_id=1, message_count=2, text="x"
    )
    assert "2 from bob" in browser.get("/settings/").content.decode()


def test_without_a_bot_token_settings_says_telegram_is_not_configured(settings, browser):
    settings.TELEGRAM_BOT_TOKEN = ""
    assert "not configured" in browser.get("/settings/").content.decode()


def test_admin_lists_links_and_notifications(admin_client, alice, bob):
    link(alice, 4242)
    Notification.objects.create(
        recipient=alice, sender=bob, chat_id=4242, first_message_id=1, last_message_id=1, message_count=1, text="x"
    )
    assert "alice" in admin_client.get("/admin/notifications/telegramlink/").content.decode()
    assert admin_client.get("/admin/notifications/notification/").status_code == 200


def test_a_users_admin_page_shows_the_link_and_recent_notifications(admin_client, alice, bob):
    link(alice, 4242)
    Notification.objects.create(
        recipient=alice, sender=bob, chat_id=4242, first_message_id=1, last_message_id=1, message_count=3, text="x"
    )
    page = admin_client.get(f"/admin/accounts/user/{alice.pk}/change/").content.decode()
    assert "4242" in page and "3 message(s) from bob" in page
