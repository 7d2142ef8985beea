import time
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts import presence
from messaging.services import conversation_mark_read, message_send
from notifications import services
from notifications.models import Notification, NotifiedWatermark, TelegramLink, TelegramLinkToken
from notifications.services import (
    LinkTokenInvalid,
    link_token_create,
    notification_claim,
    notification_text,
    notifications_process,
    telegram_link_redeem,
    telegram_mute_set,
    telegram_unlink,
)
from notifications.tests.conftest import link
from tests.fake_telegram import BOT_USERNAME

pytestmark = pytest.mark.django_db

CHAT = 555001


def send(sender, recipient, body: str):
    return message_send(sender=sender, recipient_username=recipient.username, body=body).message


def process(message) -> float | None:
    return notifications_process(recipient_id=message.recipient_id, sender_id=message.sender_id, message_id=message.pk)


# --- linking ----------------------------------------------------------------------


def test_a_link_token_links_the_chat_that_presents_it(alice):
    issued = link_token_create(user=alice)
    assert telegram_link_redeem(token=issued.token, chat_id=CHAT) == alice
    assert TelegramLink.objects.get(user=alice).chat_id == CHAT


def test_a_link_token_is_single_use(alice):
    issued = link_token_create(user=alice)
    telegram_link_redeem(token=issued.token, chat_id=CHAT)
    with pytest.raises(LinkTokenInvalid) as error:
        telegram_link_redeem(token=issued.token, chat_id=CHAT + 1)
    assert error.value.reason == "used"
    assert TelegramLink.objects.get(user=alice).chat_id == CHAT


def test_presenting_a_used_token_again_from_its_own_chat_is_harmless(alice):
    issued = link_token_create(user=alice)
    telegram_link_redeem(token=issued.token, chat_id=CHAT)
    assert telegram_link_redeem(token=issued.token, chat_id=CHAT) == alice


def test_an_expired_link_token_is_refused(alice):
    issued = link_token_create(user=alice)
    TelegramLinkToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(LinkTokenInvalid) as error:
        telegram_link_redeem(token=issued.token, chat_id=CHAT)
    assert error.value.reason == "expired"
    assert not TelegramLink.objects.filter(user=alice, chat_id__isnull=False).exists()


def test_a_link_token_lives_ten_minutes(alice):
    before = timezone.now()
    issued = link_token_create(user=alice)
    assert timedelta(minutes=9, seconds=59) < issued.expires_at - before <= timedelta(minutes=10, seconds=1)


def test_an_unknown_token_is_refused(alice):
    with pytest.raises(LinkTokenInvalid) as error:
        telegram_link_redeem(token="not-a-token", chat_id=CHAT)
    assert error.value.reason == "unknown"


def test_only_the_newest_token_of_a_user_works(alice):
    older = link_token_create(user=alice)
    newer = link_token_create(user=alice)
    with pytest.raises(LinkTokenInvalid):
        telegram_link_redeem(token=older.token, chat_id=CHAT)
    telegram_link_redeem(token=newer.token, chat_id=CHAT)


def test_tokens_are_stored_only_as_hashes(alice):
    issued = link_token_create(user=alice)
    assert not TelegramLinkToken.objects.filter(token_hash=issued.token).exists()
    assert TelegramLinkToken.objects.get(user=alice).token_hash != issued.token


def test_linking_a_chat_again_moves_it_to_the_new_account(alice, bob):
    telegram_link_redeem(token=link_token_create(user=alice).token, chat_id=CHAT)
    telegram_link_redeem(token=link_token_create(user=bob).token, chat_id=CHAT)
    assert TelegramLink.objects.get(user=bob).chat_id == CHAT
    assert TelegramLink.objects.get(user=alice).chat_id is None


def test_linking_another_chat_replaces_the_users_chat(alice):
    telegram_link_redeem(token=link_token_create(user=alice).token, chat_id=CHAT)
    telegram_link_redeem(token=link_token_create(user=alice).token, chat_id=CHAT + 1)
    assert TelegramLink.objects.get(user=alice).chat_id == CHAT + 1


def test_unlink_forgets_the_chat_but_remembers_mute(alice):
    link(alice, CHAT, muted=True)
    assert telegram_unlink(user=alice) is True
    stored = TelegramLink.objects.get(user=alice)
    assert (stored.chat_id, stored.muted) == (None, True)
    assert telegram_unlink(user=alice) is False


def test_unlink_by_chat_finds_the_account(alice):
    link(alice, CHAT)
    assert services.telegram_unlink_chat(chat_id=CHAT) == alice
    assert services.telegram_unlink_chat(chat_id=CHAT) is None


def test_mute_can_be_set_before_linking_and_turned_off(alice):
    assert telegram_mute_set(user=alice, muted=True).muted is True
    assert telegram_mute_set(user=alice, muted=False).muted is False


# --- the notification text ------------------------------------------------------------


def test_notification_text_escapes_html_and_links_to_the_chat(settings):
    settings.SITE_URL = "http://chat.example"
    text = notification_text(sender_username="bob", count=1, last_body="<b>hi</b> & bye")
    assert "&lt;b&gt;hi&lt;/b&gt; &amp; bye" in text
    assert "<b>bob</b>" in text
    assert text.endswith("http://chat.example/chat/bob/")


def test_notification_text_cuts_the_quote_to_300_characters():
    text = notification_text(sender_username="bob", count=3, last_body="x" * 1000)
    assert "3 new messages from <b>bob</b>" in text
    assert "x" * 299 + "…" in text
    assert "x" * 300 not in text


# --- offline notifications ----------------------------------------------------------


def test_a_burst_from_one_sender_makes_one_notification(fake_telegram, alice, bob):
    link(bob, CHAT)
    first = send(alice, bob, "one")
    send(alice, bob, "two")
    send(alice, bob, "three <script>")
    assert process(first) is None
    [sent] = fake_telegram.messages_to(CHAT)
    assert "3 new messages from <b>alice</b>" in sent.text
    assert "three &lt;script&gt;" in sent.text
    notification = Notification.objects.get()
    assert (notification.status, notification.message_count) == ("sent", 3)


def test_running_the_check_again_notifies_nothing_twice(fake_telegram, alice, bob):
    link(bob, CHAT)
    messages = [send(alice, bob, f"m{i}") for i in range(3)]
    for message in messages * 2:
        process(message)
    assert len(fake_telegram.messages_to(CHAT)) == 1
    assert NotifiedWatermark.objects.get().up_to == messages[-1].pk


def test_a_later_message_gets_its_own_notification(fake_telegram, alice, bob):
    link(bob, CHAT)
    process(send(alice, bob, "first"))
    process(send(alice, bob, "second"))
    texts = [m.text for m in fake_telegram.messages_to(CHAT)]
    assert len(texts) == 2 and "second" in texts[1]


def test_messages_read_before_the_check_are_not_notified(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    conversation_mark_read(user=bob, peer_username="alice", up_to=message.pk)
    process(message)
    assert fake_telegram.messages_to(CHAT) == []
    assert not Notification.objects.exists()


def test_only_unread_messages_are_counted(fake_telegram, alice, bob):
    link(bob, CHAT)
    first = send(alice, bob, "one")
    conversation_mark_read(user=bob, peer_username="alice", up_to=first.pk)
    send(alice, bob, "two")
    process(first)
    [sent] = fake_telegram.messages_to(CHAT)
    assert "New message from <b>alice</b>" in sent.text and "two" in sent.text


def test_an_online_recipient_is_not_notified(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    presence.presence_connect(user_id=bob.pk, connection_id="tab-1")
    process(message)
    assert fake_telegram.messages_to(CHAT) == []


def test_a_muted_recipient_is_not_notified(fake_telegram, alice, bob):
    link(bob, CHAT, muted=True)
    process(send(alice, bob, "hello"))
    assert fake_telegram.messages_to(CHAT) == []


def test_an_unlinked_recipient_is_not_notified(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    telegram_unlink(user=bob)
    process(message)
    assert fake_telegram.calls == []


def test_nothing_is_scheduled_without_a_bot_token(settings, alice, bob):
    settings.TELEGRAM_BOT_TOKEN = ""
    link(bob, CHAT)
    assert services.notification_schedule(message=send(alice, bob, "hello")) is False


def test_nothing_is_scheduled_for_an_unlinked_or_online_recipient(fake_telegram, settings, alice, bob):
    settings.NOTIFY_DELAY_SECONDS = 3600
    assert services.notification_schedule(message=send(alice, bob, "hello")) is False
    link(bob, CHAT)
    presence.presence_connect(user_id=bob.pk, connection_id="tab-1")
    assert services.notification_schedule(message=send(alice, bob, "hello")) is False


def test_flood_control_is_retried_after_telegrams_retry_after(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    fake_telegram.fail_next(429, retry_after=7)
    retry_in = process(message)
    assert retry_in == 7
    notification = Notification.objects.get()
    assert notification.status == "pending"
    # Not due yet: another run does not call Telegram early.
    assert 0 < process(message) <= 7
    assert len(fake_telegram.refused) == 1
    Notification.objects.update(next_attempt_at=timezone.now())
    assert process(message) is None
    assert len(fake_telegram.messages_to(CHAT)) == 1
    assert Notification.objects.get().attempts == 2


def test_a_blocked_bot_unlinks_the_account(fake_telegram, alice, bob):
    link(bob, CHAT)
    fake_telegram.fail_next(403)
    assert process(send(alice, bob, "hello")) is None
    assert TelegramLink.objects.get(user=bob).chat_id is None
    assert Notification.objects.get().status == "failed"


def test_server_errors_are_retried_with_backoff_then_given_up(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    fake_telegram.fail_next(500, times=services.MAX_ATTEMPTS)
    delays = []
    for _ in range(services.MAX_ATTEMPTS):
        Notification.objects.update(next_attempt_at=timezone.now())
        delays.append(process(message))
    assert delays[:3] == [2, 5, 15]
    assert delays[-1] is None
    assert Notification.objects.get().status == "failed"
    assert fake_telegram.messages_to(CHAT) == []


def test_a_network_error_is_retried(fake_telegram, settings, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    settings.TELEGRAM_API_BASE = "http://127.0.0.1:9"  # nothing listens on the discard port
    assert process(message) == 2
    settings.TELEGRAM_API_BASE = fake_telegram.base_url
    Notification.objects.update(next_attempt_at=timezone.now())
    assert process(message) is None
    assert len(fake_telegram.messages_to(CHAT)) == 1


def test_a_notification_claimed_by_a_worker_that_died_is_sent_by_the_next_run(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    notification_claim(recipient_id=bob.pk, sender_id=alice.pk, message_id=message.pk)  # then the worker died
    assert fake_telegram.messages_to(CHAT) == []
    process(message)
    process(message)
    assert len(fake_telegram.messages_to(CHAT)) == 1


# --- a worker dying during the Bot API call: sent again (at least once) -------------


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no `except Exception` sees it."""


def die_during_the_call(monkeypatch, *, after_telegram_got_it: bool) -> None:
    """The next Bot API call's worker dies, before or after Telegram got the call."""
    real_send = services.telegram.send_message

    def send_and_die(**kwargs) -> None:
        monkeypatch.setattr(services.telegram, "send_message", real_send)  # the next worker's
        if after_telegram_got_it:
            real_send(**kwargs)
        raise WorkerKilled

    monkeypatch.setattr(services.telegram, "send_message", send_and_die)


def lease_passes() -> None:
    Notification.objects.update(sending_since=timezone.now() - services.sending_lease())


def test_a_notification_whose_worker_died_during_the_call_is_sent_again_once_the_call_has_surely_ended(
    fake_telegram, monkeypatch, caplog, alice, bob
):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    die_during_the_call(monkeypatch, after_telegram_got_it=False)
    with pytest.raises(WorkerKilled):
        process(message)
    assert Notification.objects.get().status == "sending"
    # The call may still be in flight: look again when it has surely ended.
    assert 0 < process(message) <= services.sending_lease().total_seconds()
    assert fake_telegram.calls == []

    lease_passes()
    assert process(message) is None
    notification = Notification.objects.get()
    assert (notification.status, notification.attempts) == ("sent", 2)
    assert "may be a duplicate" in caplog.text
    process(message)
    assert len(fake_telegram.messages_to(CHAT)) == 1


def test_a_call_that_reached_telegram_before_its_worker_died_is_sent_twice(fake_telegram, monkeypatch, alice, bob):
    # The price of never losing one: Telegram had it, nobody recorded that.
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    die_during_the_call(monkeypatch, after_telegram_got_it=True)
    with pytest.raises(WorkerKilled):
        process(message)
    lease_passes()
    assert process(message) is None
    assert len(fake_telegram.messages_to(CHAT)) == 2
    assert Notification.objects.get().status == "sent"


def test_a_notification_read_while_its_worker_was_dead_is_cancelled_not_sent_again(
    fake_telegram, monkeypatch, alice, bob
):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    die_during_the_call(monkeypatch, after_telegram_got_it=False)
    with pytest.raises(WorkerKilled):
        process(message)
    conversation_mark_read(user=bob, peer_username="alice", up_to=message.pk)
    lease_passes()
    assert process(message) is None
    assert Notification.objects.get().status == "cancelled"
    assert fake_telegram.calls == []


def test_a_notification_whose_worker_died_during_its_last_attempt_is_given_up_as_unknown(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    notification = notification_claim(recipient_id=bob.pk, sender_id=alice.pk, message_id=message.pk)
    dead = Notification.objects.filter(pk=notification.pk)
    dead.update(status="sending", attempts=services.MAX_ATTEMPTS - 1)
    lease_passes()
    assert process(message) is None
    assert len(fake_telegram.messages_to(CHAT)) == 1

    dead.update(status="sending", attempts=services.MAX_ATTEMPTS)
    lease_passes()
    assert process(message) is None
    assert dead.get().status == "unknown"
    assert len(fake_telegram.messages_to(CHAT)) == 1


def test_a_worker_that_outlived_its_lease_leaves_the_attempt_that_took_over_alone(
    fake_telegram, monkeypatch, alice, bob
):
    from notifications import telegram

    link(bob, CHAT)
    message = send(alice, bob, "hello")

    def stalled_call(**kwargs) -> None:
        # Attempt 1 stalls past its lease; another run starts attempt 2 meanwhile.
        Notification.objects.update(attempts=2, sending_since=timezone.now())
        raise telegram.RetryLater("network error")

    monkeypatch.setattr(services.telegram, "send_message", stalled_call)
    process(message)
    notification = Notification.objects.get()
    assert (notification.status, notification.attempts) == ("sending", 2)


def test_the_sending_lease_follows_the_request_timeout(settings):
    settings.TELEGRAM_REQUEST_TIMEOUT = 2
    assert services.sending_lease() == timedelta(seconds=2 * 2 + 5)


def test_a_call_telegram_does_not_answer_ends_with_the_request_timeout_and_is_retried(
    fake_telegram, settings, alice, bob
):
    # What the lease relies on: a worker that lives ends its call in time.
    settings.TELEGRAM_REQUEST_TIMEOUT = 1
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    fake_telegram.hold_next_send()
    started = time.monotonic()
    assert process(message) == services.RETRY_BACKOFF_SECONDS[0]
    assert time.monotonic() - started < services.sending_lease().total_seconds()
    fake_telegram.wait_for(lambda: fake_telegram.dropped == [CHAT], what="the call to be dropped")
    assert Notification.objects.get().status == "pending"
    Notification.objects.update(next_attempt_at=timezone.now())
    assert process(message) is None
    assert len(fake_telegram.messages_to(CHAT)) == 1


def test_unlinking_cancels_a_claimed_notification(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    notification_claim(recipient_id=bob.pk, sender_id=alice.pk, message_id=message.pk)
    telegram_unlink(user=bob)
    process(message)
    assert Notification.objects.get().status == "cancelled"
    assert fake_telegram.calls == []


def test_the_bot_username_for_links_comes_from_get_me_once(fake_telegram):
    from notifications import telegram

    assert telegram.bot_username() == BOT_USERNAME
    assert telegram.bot_username() == BOT_USERNAME
    assert fake_telegram.calls == ["getMe"]


def test_a_notification_waiting_out_flood_control_is_dropped_once_read(fake_telegram, alice, bob):
    link(bob, CHAT)
    message = send(alice, bob, "hello")
    fake_telegram.fail_next(429, retry_after=7)
    process(message)
    conversation_mark_read(user=bob, peer_username="alice", up_to=message.pk)
    Notification.objects.update(next_attempt_at=timezone.now())
    assert process(message) is None
    assert Notification.objects.get().status == "cancelled"
    assert fake_telegram.messages_to(CHAT) == []
