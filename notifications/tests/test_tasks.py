"""Scheduling the offline check: Celery with a broker; a timer thread in embedded mode."""

import time

import pytest

from messaging.services import message_send
from notifications.models import NotifiedWatermark
from notifications.tasks import notify_offline, notify_offline_schedule
from notifications.tests.conftest import link

CHAT = 8800


@pytest.mark.django_db
def test_the_task_runs_the_check_and_notifies(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = message_send(sender=alice, recipient_username="bob", body="hi").message
    notify_offline.apply(args=(bob.pk, alice.pk, message.pk)).get()
    assert len(fake_telegram.messages_to(CHAT)) == 1


@pytest.mark.django_db(transaction=True)
def test_embedded_mode_waits_the_delay_on_a_timer_thread(fake_telegram, settings, alice, bob):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    message = message_send(sender=alice, recipient_username="bob", body="hi").message
    link(bob, CHAT)  # only now, so that storing the message scheduled nothing itself
    scheduled_at = time.monotonic()
    notify_offline_schedule(recipient_id=bob.pk, sender_id=alice.pk, message_id=message.pk, delay=1)
    assert fake_telegram.messages_to(CHAT) == []
    fake_telegram.wait_for(lambda: fake_telegram.messages_to(CHAT), what="the notification")
    assert fake_telegram.messages_to(CHAT)[0].at - scheduled_at >= 1


@pytest.mark.django_db(transaction=True)
def test_embedded_mode_retries_flood_control_on_a_timer_too(fake_telegram, settings, alice, bob):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    fake_telegram.fail_next(429, retry_after=1)
    message = message_send(sender=alice, recipient_username="bob", body="hi").message
    link(bob, CHAT)
    notify_offline_schedule(recipient_id=bob.pk, sender_id=alice.pk, message_id=message.pk, delay=0)
    fake_telegram.wait_for(lambda: fake_telegram.messages_to(CHAT), what="the retried notification")
    [refusal] = fake_telegram.refusals_to(CHAT)
    assert fake_telegram.messages_to(CHAT)[0].at - refusal.at >= 1 - 0.1


@pytest.mark.django_db(transaction=True)
def test_a_stored_message_schedules_the_check_after_commit(fake_telegram, settings, alice, bob):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.NOTIFY_DELAY_SECONDS = 1
    link(bob, CHAT)
    message = message_send(sender=alice, recipient_username="bob", body="hello").message
    fake_telegram.wait_for(lambda: fake_telegram.messages_to(CHAT), what="the notification")
    assert "hello" in fake_telegram.messages_to(CHAT)[0].text
    assert NotifiedWatermark.objects.get(recipient=bob, sender=alice).up_to == message.pk
