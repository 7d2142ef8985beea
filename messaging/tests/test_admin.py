import pytest
from django.urls import reverse

from accounts.tests.factories import UserFactory
from messaging.models import Conversation
from messaging.services import message_send

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_admin_searches_messages_by_text_and_user_and_filters_by_date(admin_client, alice, bob):
    message_send(sender=alice, recipient_username="bob", body="the quarterly numbers")
    message_send(sender=bob, recipient_username="alice", body="lunch?")
    url = reverse("admin:messaging_message_changelist")
    by_text = admin_client.get(url, {"q": "quarterly"}).content.decode()
    assert "the quarterly numbers" in by_text and "lunch?" not in by_text
    by_user = admin_client.get(url, {"q": "bob"}).content.decode()
    assert "the quarterly numbers" in by_user and "lunch?" in by_user
    assert admin_client.get(url, {"created_at__gte": "2000-01-01"}).status_code == 200


def test_admin_shows_a_conversation_with_its_messages(admin_client, alice, bob):
    message_send(sender=alice, recipient_username="bob", body="first words")
    conversation = Conversation.objects.get()
    page = admin_client.get(reverse("admin:messaging_conversation_change", args=[conversation.pk])).content.decode()
    assert "first words" in page
    assert admin_client.get(reverse("admin:messaging_conversation_changelist"), {"q": "alice"}).status_code == 200


def test_admin_lists_users_with_last_seen(admin_client, alice):
    page = admin_client.get(reverse("admin:accounts_user_changelist")).content.decode()
    assert "alice" in page and "Last seen" in page
