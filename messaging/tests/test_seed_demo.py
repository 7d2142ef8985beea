import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command

from accounts.models import User
from messaging.models import Conversation, Message
from messaging.selectors import conversation_list

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_users_conversations_and_messages():
    call_command("seed_demo", users=5, conversations=2, messages=4, password="demo-pass-123")
    assert User.objects.filter(username__startswith="demo").count() == 5
    assert Conversation.objects.count() >= 5
    assert Message.objects.count() == Conversation.objects.count() * 4
    assert authenticate(username="demo1", password="demo-pass-123") is not None
    rows = list(conversation_list(user=User.objects.get(username="demo1")))
    assert rows and all(row.conversation.last_message_id for row in rows)


def test_seed_demo_twice_reuses_the_users():
    call_command("seed_demo", users=3, conversations=1, messages=1)
    call_command("seed_demo", users=3, conversations=1, messages=1)
    assert User.objects.filter(username__startswith="demo").count() == 3


def test_seed_demo_needs_two_users():
    with pytest.raises(CommandError):
        call_command("seed_demo", users=1)
