"""End to end, all real parts: a Celery worker process (Redis broker), `manage.py
runbot`, and the fake Bot API over HTTP. The processes are shared by the module; the
fault tests, which stop or kill the worker by its PID and start another, run last."""

import os
import signal
import time

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from accounts import presence
from accounts.tests.factories import UserFactory
from messaging.services import conversation_mark_read, message_send
from notifications.models import Notification, NotifiedWatermark, TelegramLink
from notifications.services import sending_lease, telegram_mute_set
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
# The workers' TELEGRAM_REQUEST_TIMEOUT: it sets their sending lease (9 s), after which
# a notification whose worker died during the Bot API call is sent again.
REQUEST_TIMEOUT = 2
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

    def restart_worker(self, pool: str = "solo") -> None:
        self.worker = CeleryWorker(pool=pool, **self.env).start()

    def restart_worker_after_visibility_timeout(self, stopped_at: float) -> None:
        """Start a new worker once the tasks the old one held are visible again: the
        broker hands them out to a worker starting after that at once."""
        time.sleep(max(0.0, VISIBILITY_TIMEOUT + 0.2 - (time.monotonic() - stopped_at)))
        self.restart_worker()

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
            "TELEGRAM_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
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


@pytest.fixture(autouse=True)
def _live_worker(stack):
    """A fault test that failed half-way may have left no worker running: start one, so
    that the tests after it pass or fail for their own reasons."""
    if stack.worker.proc.poll() is not None:
        stack.restart_worker()


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
    assert "sendMessage" not in fake_telegram.calls

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


def succeeded(worker: CeleryWorker) -> int:
    return worker.log_path.read_text(errors="replace").count(SUCCEEDED)


def test_notifications_queued_while_the_worker_is_stopped_are_each_sent_once_it_is_back(
    fake_telegram, stack, settings, alice, bob, carol
):
    settings.NOTIFY_DELAY_SECONDS = KILL_DELAY
    link(bob, 7400)
    link(carol, 7401)
    log = stack.worker.log_path
    received_before = log.read_text(errors="replace").count(RECEIVED)
    held = [send(alice, bob, f"to bob {i}") for i in range(2)]
    wait_until(
        lambda: log.read_text(errors="replace").count(RECEIVED) - received_before == len(held),
        timeout=KILL_DELAY - 1,
        what="the worker to hold the first tasks",
    )
    # SIGTERM by PID: a warm shutdown, while it holds tasks that are not due yet.
    stack.worker.stop()
    stopped_at = time.monotonic()
    # Queued while no worker runs, and due before one is back.
    settings.NOTIFY_DELAY_SECONDS = 0
    queued = [send(alice, carol, f"to carol {i}") for i in range(2)]
    assert "sendMessage" not in fake_telegram.calls

    stack.restart_worker_after_visibility_timeout(stopped_at)
    messages = held + queued
    wait_until(lambda: all(handled(m) for m in messages), what="every check to run")
    fake_telegram.wait_for(
        lambda: fake_telegram.messages_to(7400) and fake_telegram.messages_to(7401), what="both notifications"
    )
    wait_until(lambda: succeeded(stack.worker) >= len(messages), what="every task to finish")
    assert [m.text.split(":")[0] for m in fake_telegram.messages_to(7400)] == ["2 new messages from <b>alice</b>"]
    assert [m.text.split(":")[0] for m in fake_telegram.messages_to(7401)] == ["2 new messages from <b>alice</b>"]
    assert sorted(Notification.objects.values_list("status", flat=True)) == ["sent", "sent"]


def test_a_worker_killed_during_its_claim_leaves_the_notification_to_the_next_which_sends_it_once(
    fake_telegram, stack, alice, bob
):
    link(bob, 7500)
    NotifiedWatermark.objects.create(recipient=bob, sender=alice)
    message = send(alice, bob, "hello")
    with transaction.atomic():
        # Holding the pair's watermark stops the worker inside the claim's transaction.
        NotifiedWatermark.objects.select_for_update().get(recipient=bob, sender=alice)

        def worker_blocked() -> bool:
            with connection.cursor() as cursor:
                # A transaction otherwise sees one snapshot of pg_stat_activity.
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                return cursor.fetchone()[0] == 1

        wait_until(worker_blocked, timeout=DELAY + 10, what="the worker to wait for the watermark")
        stack.worker.kill()
        killed_at = time.monotonic()
    # Its claim rolled back: nothing was claimed, nothing sent.
    assert NotifiedWatermark.objects.get(recipient=bob, sender=alice).up_to == 0
    assert not Notification.objects.exists()
    assert "sendMessage" not in fake_telegram.calls

    stack.restart_worker_after_visibility_timeout(killed_at)
    fake_telegram.wait_for(lambda: fake_telegram.messages_to(7500), what="the notification")
    wait_until(lambda: succeeded(stack.worker) >= 1, what="the redelivered task to finish")
    assert handled(message)
    assert len(fake_telegram.messages_to(7500)) == 1
    notification = Notification.objects.get()
    assert (notification.status, notification.attempts) == ("sent", 1)


def test_a_worker_killed_during_the_bot_api_call_has_the_notification_sent_once_by_the_next(
    fake_telegram, stack, settings, alice, bob
):
    settings.TELEGRAM_REQUEST_TIMEOUT = REQUEST_TIMEOUT
    lease = sending_lease().total_seconds()
    link(bob, 7600)
    fake_telegram.hold_next_send()
    send(alice, bob, "hello")
    fake_telegram.wait_for(lambda: fake_telegram.holding == [7600], what="the worker's call to hang")
    held_at = time.monotonic()
    stack.worker.kill()
    killed_at = time.monotonic()
    # The call never reached "Telegram": the connection closed with the worker.
    fake_telegram.wait_for(lambda: fake_telegram.dropped == [7600], timeout=5, what="the call to be dropped")
    notification = Notification.objects.get()
    assert (notification.status, notification.attempts) == ("sending", 1)

    stack.restart_worker_after_visibility_timeout(killed_at)
    # The redelivered task waits out the lease (the call might have been in flight),
    # then sends it again.
    fake_telegram.wait_for(
        lambda: fake_telegram.messages_to(7600), timeout=lease + 15, what="the notification to be sent again"
    )
    wait_until(lambda: succeeded(stack.worker) >= 1, what="the task to finish")
    [sent] = fake_telegram.messages_to(7600)
    assert sent.at - held_at >= lease - 1
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 2)
    assert "may be a duplicate" in stack.worker.log_path.read_text(errors="replace")


def test_a_pool_child_killed_during_the_bot_api_call_has_its_task_rerun_which_sends_it_once(
    fake_telegram, stack, settings, alice, bob
):
    # Production's prefork pool: the parent outlives the child and, with
    # task_reject_on_worker_lost, puts the task back at once instead of acknowledging it.
    stack.worker.stop()
    stack.restart_worker(pool="prefork")
    settings.TELEGRAM_REQUEST_TIMEOUT = REQUEST_TIMEOUT
    lease = sending_lease().total_seconds()
    link(bob, 7700)
    fake_telegram.hold_next_send()
    send(alice, bob, "hello")
    fake_telegram.wait_for(lambda: fake_telegram.holding == [7700], what="the child's call to hang")
    held_at = time.monotonic()
    [child] = stack.worker.children()
    os.kill(child, signal.SIGKILL)
    fake_telegram.wait_for(lambda: fake_telegram.dropped == [7700], timeout=5, what="the call to be dropped")

    fake_telegram.wait_for(
        lambda: fake_telegram.messages_to(7700), timeout=lease + 15, what="the notification to be sent again"
    )
    wait_until(lambda: succeeded(stack.worker) >= 1, what="the task to finish")
    [sent] = fake_telegram.messages_to(7700)
    assert sent.at - held_at >= lease - 1
    notification = Notification.objects.get()
    assert (notification.status, notification.attempts) == ("sent", 2)
    log = stack.worker.log_path.read_text(errors="replace")
    assert "WorkerLostError" in log
    assert "may be a duplicate" in log
