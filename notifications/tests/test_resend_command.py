import pytest
from django.core.management import CommandError, call_command

from messaging.services import message_send
from notifications.models import Notification
from notifications.tests.conftest import link

pytestmark = pytest.mark.django_db

CHAT = 4242


def test_messages_no_check_ever_saw_are_notified_once(fake_telegram, settings, alice, bob):
    settings.NOTIFY_DELAY_SECONDS = 0
    link(bob, CHAT)
    # In a test transaction nothing runs on commit: as if the broker lost the tasks.
    for body in ("one", "two"):
        message_send(sender=alice, recipient_username="bob", body=body)
    call_command("notifications_resend", inline=True)
    [sent] = fake_telegram.messages_to(CHAT)
    assert "2 new messages from <b>alice</b>" in sent.text
    call_command("notifications_resend", inline=True)
    assert len(fake_telegram.messages_to(CHAT)) == 1
    assert Notification.objects.get().status == "sent"


def test_read_messages_are_not_resent(fake_telegram, settings, alice, bob):
    from messaging.services import conversation_mark_read

    settings.NOTIFY_DELAY_SECONDS = 0
    link(bob, CHAT)
    message = message_send(sender=alice, recipient_username="bob", body="seen").message
    conversation_mark_read(user=bob, peer_username="alice", up_to=message.pk)
    call_command("notifications_resend", inline=True)
    assert fake_telegram.messages_to(CHAT) == []


def test_the_command_needs_a_bot_token(settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    with pytest.raises(CommandError):
        call_command("notifications_resend")
