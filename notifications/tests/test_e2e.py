"""End to end, all real parts: a Celery worker process (Redis broker), `manage.py
runbot`, and the fake Bot API over HTTP. The processes are shared by the module;
the kill test, which replaces the worker, runs last."""

import time

import pytest
from rest_framework.test import APIClient

from accounts import presence
from accounts.tests.factories import UserFactory
from messaging.services import conversation_mark_read, message_send
from notifications.models import Notification, NotifiedWatermark, TelegramLink
from notifications.services import telegram_mute_set
from notifications.tests.conftest import BOT_TOKEN, link
from tests.fake_telegram import BOT_USERNAME
from tests.procs import BotProcess, CeleryWorker, declare_broker_queues, require_stack

pytestmark = [pytest.mark.stack, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The countdown the test process schedules with; the worker's NOTIFY_DELAY_SECONDS
# (WINDOW) only sets how far back a check gathers a sender's messages.
DELAY = 2
KILL_DELAY = 6
WINDOW = 10
# A task held by a killed worker is handed out again after this long (it is shorter
# than DELAY only because a live worker's own held tasks are looked at again just
# every 100 s or so, far beyond this module; a redelivery would be harmless anyway).
VISIBILITY_TIMEOUT = 1
RECEIVED = "] received"
SUCCEEDED = "] succeeded in"


class Stack:
    """The module's worker and bot processes; the kill test replaces the worker."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        # Started together: each takes seconds to import Django and aiogram.
        self.worker = CeleryWorker(**env).launch()
        self.bot = BotProcess(**env).launch()
        self.worker.wait_ready()
        self.bot.wait_ready()

    def restart_worker(self) -> None:
        self.worker = CeleryWorker(**self.env).start()

    def stop(self) -> None:
        for process in (self.worker, self.bot):
            if process.proc and process.proc.poll() is None:
                process.proc.terminate()
        for process in (self.worker, self.bot):
            process.stop()


@pytest.fixture(scope="module")
def stack(fake_telegram_server, django_db_setup):
    require_stack()
    stack = Stack(
        {
            "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
            "TELEGRAM_API_BASE": fake_telegram_server.base_url,
            "TELEGRAM_BOT_USERNAME": "",
            "NOTIFY_DELAY_SECONDS": str(WINDOW),
            "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        }
    )
    yield stack
    stack.stop()


@pytest.fixture(autouse=True)
def _stack(fake_telegram, settings):
    require_stack()
    settings.NOTIFY_DELAY_SECONDS = DELAY
    # As if configured: the web side then need not ask getMe (nor import aiogram).
    settings.TELEGRAM_BOT_USERNAME = BOT_USERNAME
    # The root conftest flushed Redis, and with it the broker's queue bindings.
    declare_broker_queues()


def send(sender, recipient, body: str):
    return message_send(sender=sender, recipient_username=recipient.username, body=body).message


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def handled(message) -> bool:
    """The offline check of this message has run (whatever it decided)."""
    return NotifiedWatermark.objects.filter(
        recipient_id=message.recipient_id, sender_id=message.sender_id, up_to__gte=message.pk
    ).exists()


def test_start_with_a_token_from_the_api_links_the_chat_through_the_running_bot(fake_telegram, stack, alice):
    client = APIClient()
    client.force_authenticate(alice)
    token = client.post("/api/telegram/link/").json()["url"].rpartition("start=")[2]
    fake_telegram.push_message(chat_id=9001, text="/start")
    fake_telegram.push_message(chat_id=9001, text=f"/start {token}")
    fake_telegram.wait_for(lambda: len(fake_telegram.messages_to(9001)) == 2, what="two answers")
    how_to, linked = (m.text for m in fake_telegram.messages_to(9001))
    assert "/settings/" in how_to
    assert "Linked to <b>alice</b>" in linked
    assert TelegramLink.objects.get(user=alice).chat_id == 9001

    fake_telegram.push_message(chat_id=9001, text=f"/start {token}")
    fake_telegram.push_message(chat_id=9002, text=f"/start {token}")
    fake_telegram.wait_for(lambda: fake_telegram.messages_to(9002), what="the answer to a used token")
    assert "already used" in fake_telegram.messages_to(9002)[0].text

    fake_telegram.push_message(chat_id=9001, text="/stop")
    wait_until(lambda: TelegramLink.objects.get(user=alice).chat_id is None, what="/stop to unlink")


def test_only_an_offline_linked_unmuted_recipient_who_did_not_read_is_notified_once(fake_telegram, stack, alice):
    offline, comes_online, reads, mutes, unlinks = (
        UserFactory(username=name) for name in ("olga", "oscar", "rita", "mona", "ursula")
    )
    chats = {user: 7000 + i for i, user in enumerate((offline, comes_online, reads, mutes, unlinks))}
    for user, chat_id in chats.items():
        link(user, chat_id)

    burst = [send(alice, offline, f"burst {i}") for i in range(3)]
    others = {user: send(alice, user, "hello") for user in (comes_online, reads, mutes, unlinks)}
    # Within the delay, each of the others gives a reason not to be notified.
    presence.presence_connect(user_id=comes_online.pk, connection_id="tab")
    conversation_mark_read(user=reads, peer_username="alice", up_to=others[reads].pk)
    telegram_mute_set(user=mutes, muted=True)
    unlinking = APIClient()
    unlinking.force_authenticate(unlinks)
    assert unlinking.delete("/api/telegram/link/").status_code == 204

    fake_telegram.wait_for(lambda: fake_telegram.messages_to(chats[offline]), what="the notification")
    wait_until(lambda: all(handled(m) for m in [*burst, *others.values()]), what="every check to run")
    [notification] = fake_telegram.messages_to(chats[offline])
    assert "3 new messages from <b>alice</b>" in notification.text
    assert "burst 2" in notification.text
    assert [m.chat_id for m in fake_telegram.sent] == [chats[offline]]


def test_flood_control_is_retried_after_retry_after(fake_telegram, stack, alice, bob):
    link(bob, 7100)
    fake_telegram.fail_next(429, retry_after=2)
    send(alice, bob, "hello")
    fake_telegram.wait_for(lambda: fake_telegram.messages_to(7100), what="the retried notification")
    [refusal] = fake_telegram.refusals_to(7100)
    [sent] = fake_telegram.messages_to(7100)
    assert sent.at - refusal.at >= 2 - 0.1
    assert Notification.objects.get(recipient=bob).attempts == 2


def test_a_blocked_bot_unlinks_the_account(fake_telegram, stack, alice, bob):
    link(bob, 7200)
    fake_telegram.fail_next(403)
    send(alice, bob, "hello")
    wait_until(lambda: TelegramLink.objects.get(user=bob).chat_id is None, what="the account to be unlinked")
    assert fake_telegram.sent == []
    assert Notification.objects.get(recipient=bob).status == "failed"


def test_a_killed_worker_loses_and_duplicates_nothing(fake_telegram, stack, settings, alice, bob, carol):
    # Time enough to see the worker take every task and kill it before they are due.
    settings.NOTIFY_DELAY_SECONDS = KILL_DELAY
    link(bob, 7300)
    link(carol, 7301)
    log = stack.worker.log_path
    received_before = log.read_text(errors="replace").count(RECEIVED)
    messages = [send(alice, bob, f"to bob {i}") for i in range(3)] + [
        send(alice, carol, f"to carol {i}") for i in range(2)
    ]

    def received() -> int:
        return log.read_text(errors="replace").count(RECEIVED) - received_before

    wait_until(lambda: received() == len(messages), timeout=KILL_DELAY - 1, what="the worker to hold every task")
    stack.worker.kill()
    killed_at = time.monotonic()
    assert fake_telegram.calls == []

    # The broker hands the killed worker's tasks out again once their visibility
    # timeout has passed; a worker starting after that takes them at once.
    time.sleep(max(0.0, VISIBILITY_TIMEOUT + 0.2 - (time.monotonic() - killed_at)))
    stack.restart_worker()
    fake_telegram.wait_for(
        lambda: fake_telegram.messages_to(7300) and fake_telegram.messages_to(7301), what="both notifications"
    )
    wait_until(lambda: all(handled(m) for m in messages), what="every check to run")
    restarted_log = stack.worker.log_path
    wait_until(
        lambda: restarted_log.read_text(errors="replace").count(SUCCEEDED) >= len(messages),
        what="every redelivered task to finish",
    )
    assert len(fake_telegram.messages_to(7300)) == 1
    assert len(fake_telegram.messages_to(7301)) == 1
    assert "3 new messages" in fake_telegram.messages_to(7300)[0].text
    assert "2 new messages" in fake_telegram.messages_to(7301)[0].text
    assert sorted(Notification.objects.values_list("status", flat=True)) == ["sent", "sent"]
