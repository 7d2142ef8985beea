import re

import pytest
from django.urls import reverse

from accounts.tests.factories import PASSWORD
from notifications.models import TelegramLink
from notifications.services import telegram_link_redeem
from notifications.tests.conftest import link
from tests.fake_telegram import BOT_USERNAME

pytestmark = pytest.mark.django_db

URL = "/api/telegram/link/"
DEEP_LINK = re.compile(rf"^https://t\.me/{BOT_USERNAME}\?start=([A-Za-z0-9_-]{{1,64}})$")


def test_the_link_endpoint_is_routed_under_api():
    assert reverse("api-telegram-link") == URL


def test_post_issues_a_deep_link_with_a_one_time_token(fake_telegram, alice_client, alice):
    response = alice_client.post(URL)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"url", "expires_at"}
    token = DEEP_LINK.match(body["url"]).group(1)
    assert telegram_link_redeem(token=token, chat_id=31337) == alice


def test_the_configured_bot_username_is_used_without_asking_telegram(fake_telegram, settings, alice_client):
    settings.TELEGRAM_BOT_USERNAME = "@configured_bot"
    response = alice_client.post(URL)
    assert response.json()["url"].startswith("https://t.me/configured_bot?start=")
    assert fake_telegram.calls == []


@pytest.fixture
def jwt_client(api_client, alice):
    # Authenticates every request afresh, as a real client does (force_authenticate
    # would reuse one User object and its cached relations).
    access = api_client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {access.json()['access']}")
    return api_client


def test_after_linking_me_says_telegram_linked(fake_telegram, jwt_client):
    assert jwt_client.get("/api/me/").json()["telegram_linked"] is False
    token = DEEP_LINK.match(jwt_client.post(URL).json()["url"]).group(1)
    telegram_link_redeem(token=token, chat_id=31337)
    assert jwt_client.get("/api/me/").json()["telegram_linked"] is True


def test_delete_unlinks_and_me_says_so(jwt_client, alice):
    link(alice, 31337)
    assert jwt_client.get("/api/me/").json()["telegram_linked"] is True
    response = jwt_client.delete(URL)
    assert response.status_code == 204
    assert TelegramLink.objects.get(user=alice).chat_id is None
    assert jwt_client.get("/api/me/").json()["telegram_linked"] is False


def test_delete_without_a_link_is_still_204(alice_client):
    assert alice_client.delete(URL).status_code == 204


def test_anonymous_callers_are_refused(api_client):
    assert api_client.post(URL).status_code == 401
    assert api_client.delete(URL).status_code == 401


def test_without_a_bot_token_linking_is_unavailable(settings, alice_client):
    settings.TELEGRAM_BOT_TOKEN = ""
    response = alice_client.post(URL)
    assert response.status_code == 503
    assert "not configured" in response.json()["detail"]


def test_when_telegram_cannot_be_reached_linking_is_unavailable(fake_telegram, settings, alice_client):
    settings.TELEGRAM_API_BASE = "http://127.0.0.1:9"
    response = alice_client.post(URL)
    assert response.status_code == 503
    assert "try again" in response.json()["detail"]


def test_the_session_api_needs_csrf(fake_telegram, alice):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(URL).status_code == 403
