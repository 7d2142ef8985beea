"""Telegram links and offline notifications: every write of the notifications app.

How every due notification is sent at least once (and exactly once unless a worker
dies right around its Bot API call):

1. `message_stored` → `notification_schedule()` schedules `notify_offline(recipient,
   sender, message)` to run after `NOTIFY_DELAY_SECONDS` (Celery countdown; a timer
   thread in embedded mode).
2. `notification_claim()`, in one transaction holding the row lock of the pair's
   `NotifiedWatermark`: takes the messages from that sender with ids above the
   watermark that arrived in this message's window, moves the watermark past them and,
   if the recipient is still offline, linked, unmuted and has not read them, creates
   one `Notification` (status `pending`, text frozen). A retried or redelivered task
   finds the watermark already past its message and claims nothing: no message is
   ever claimed into two notifications.
3. `notification_deliver()` flips a `pending` row to `sending` (committed, with
   `sending_since` and one more `attempts`), makes the Bot API call, then records
   `sent` / `failed` / back to `pending` with a `next_attempt_at`.
4. A worker that dies leaves its task unacknowledged (acks_late): the broker hands it
   out again, at once when a pool child dies (`task_reject_on_worker_lost`), after
   `CELERY_VISIBILITY_TIMEOUT` when the whole worker does. The rerun delivers every
   open notification of its pair, so it needs nothing from the run that died:
   - died before the `sending` commit (during the claim, whose transaction rolls back,
     or before the flip): the rerun claims or sends it as usual, exactly once;
   - died after it: the row stays `sending`, and its call may still be in flight, so
     runs leave it alone until `sending_lease()` after `sending_since`, when the call
     has surely ended. Then it is sent again (unless read, muted or unlinked since),
     with a warning in the log: at least once. Telegram may have had the first call
     (the worker died, or could not record `sent`, after it; or a stalled worker's
     call outlived the lease): only then is a notification sent twice, which is
     better than never. A row still `sending` after `MAX_ATTEMPTS` attempts becomes
     `unknown` (its last attempt may or may not have arrived) rather than killing
     workers forever.
   `notifications_resend` runs the same check for every open notification, for when
   the tasks themselves are gone (Redis lost its data; embedded mode's timers).
"""

from __future__ import annotations

import hashlib
import html
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import presence
from accounts.models import User
from messaging.models import Membership, Message
from notifications import telegram
from notifications.models import Notification, NotifiedWatermark, TelegramLink, TelegramLinkToken

logger = logging.getLogger(__name__)

LINK_TOKEN_LIFETIME = timedelta(minutes=10)
TEXT_LIMIT = 300
# Attempts of one notification before giving up (network errors, 5xx, 429, a worker
# dying during the call).
MAX_ATTEMPTS = 8
# Waits between attempts after a network error or 5xx, by attempt number.
RETRY_BACKOFF_SECONDS = (2, 5, 15, 30, 60, 120, 300)


# --- Linking --------------------------------------------------------------------


class LinkTokenInvalid(Exception):
    """`/start <token>` with a token that cannot link: `reason` is "unknown", "used"
    or "expired"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IssuedLinkToken:
    token: str
    expires_at: datetime


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def link_token_create(*, user: User) -> IssuedLinkToken:
    """Issue a one-time link token for `user`, valid `LINK_TOKEN_LIFETIME`. Earlier
    unused tokens of the user stop working: only the newest link is live."""
    now = timezone.now()
    TelegramLinkToken.objects.filter(user=user, used_at__isnull=True).delete()
    TelegramLinkToken.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
    # 32 URL-safe characters: fits Telegram's `start` parameter (64 of [A-Za-z0-9_-]).
    token = secrets.token_urlsafe(24)
    expires_at = now + LINK_TOKEN_LIFETIME
    TelegramLinkToken.objects.create(token_hash=_token_hash(token), user=user, created_at=now, expires_at=expires_at)
    return IssuedLinkToken(token=token, expires_at=expires_at)


@transaction.atomic
def telegram_link_redeem(*, token: str, chat_id: int) -> User:
    """Link the Telegram chat `chat_id` to the account that `token` was issued to, and
    use the token up. A chat belongs to one account: it leaves any other it was linked
    to. Presenting the used token again from the chat it linked is harmless. Raises
    `LinkTokenInvalid`."""
    row = TelegramLinkToken.objects.select_for_update().select_related("user").filter(token_hash=_token_hash(token))
    link_token = row.first()
    if link_token is None or not link_token.user.is_active:
        raise LinkTokenInvalid("unknown")
    user = link_token.user
    if link_token.used_at is not None:
        if TelegramLink.objects.filter(user=user, chat_id=chat_id).exists():
            return user
        raise LinkTokenInvalid("used")
    now = timezone.now()
    if link_token.expires_at <= now:
        raise LinkTokenInvalid("expired")
    link_token.used_at = now
    link_token.save(update_fields=["used_at"])

    TelegramLink.objects.filter(chat_id=chat_id).exclude(user=user).update(chat_id=None, linked_at=None)
    link, _ = TelegramLink.objects.select_for_update().get_or_create(user=user)
    link.chat_id = chat_id
    link.linked_at = now
    link.save(update_fields=["chat_id", "linked_at", "updated_at"])
    logger.info("telegram: user %s linked a chat", user.pk)
    return user


def telegram_unlink(*, user: User) -> bool:
    """Forget the user's Telegram chat; notifications stop (pending ones are cancelled
    when their turn comes). Returns whether there was a link."""
    unlinked = TelegramLink.objects.filter(user=user, chat_id__isnull=False).update(chat_id=None, linked_at=None)
    if unlinked:
        logger.info("telegram: user %s unlinked", user.pk)
    return bool(unlinked)


def telegram_unlink_chat(*, chat_id: int) -> User | None:
    """Forget a Telegram chat, whichever account it is linked to (`/stop`, or the user
    blocked the bot). Returns that account, if any."""
    with transaction.atomic():
        link = TelegramLink.objects.select_for_update().select_related("user").filter(chat_id=chat_id).first()
        if link is None:
            return None
        link.chat_id = None
        link.linked_at = None
        link.save(update_fields=["chat_id", "linked_at", "updated_at"])
    logger.info("telegram: chat of user %s unlinked", link.user_id)
    return link.user


def telegram_mute_set(*, user: User, muted: bool) -> TelegramLink:
    """Turn the user's Telegram notifications off (`muted`) or on again, linked or not."""
    link, _ = TelegramLink.objects.update_or_create(user=user, defaults={"muted": muted})
    return link


# --- Offline notifications ------------------------------------------------------


def notification_schedule(*, message: Message) -> bool:
    """Schedule the offline check for a just-stored message (call after commit).
    Nothing is scheduled when notifications are off (no bot token), when the recipient
    has no active link or is online right now. Returns whether a check was scheduled."""
    if not telegram.is_configured():
        return False
    recipient_id = message.recipient_id
    if not TelegramLink.objects.filter(user_id=recipient_id, chat_id__isnull=False, muted=False).exists():
        return False
    if presence.is_online(recipient_id):
        return False
    from notifications.tasks import notify_offline_schedule

    notify_offline_schedule(
        recipient_id=recipient_id,
        sender_id=message.sender_id,
        message_id=message.pk,
        delay=settings.NOTIFY_DELAY_SECONDS,
    )
    return True


def notification_text(*, sender_username: str, count: int, last_body: str) -> str:
    """The Telegram message (HTML) about `count` messages from a sender, quoting the
    last one, cut to `TEXT_LIMIT` characters before escaping so no entity is cut."""
    quote = last_body if len(last_body) <= TEXT_LIMIT else last_body[: TEXT_LIMIT - 1] + "…"
    name = html.escape(sender_username, quote=False)
    head = f"New message from <b>{name}</b>" if count == 1 else f"{count} new messages from <b>{name}</b>"
    url = f"{settings.SITE_URL}/chat/{sender_username}/"
    return f"{head}:\n\n{html.escape(quote, quote=False)}\n\n{html.escape(url, quote=False)}"


def notification_claim(*, recipient_id: int, sender_id: int, message_id: int) -> Notification | None:
    """Claim the not yet handled messages of this message's window (from the sender to
    the recipient, arrived from `NOTIFY_DELAY_SECONDS` before it on) into one pending
    `Notification`, or into nothing when the recipient is online, has read them, has
    muted notifications or has no link. Either way the watermark moves past them, in
    the same transaction, so they are never claimed again."""
    pair = {"recipient_id": recipient_id, "sender_id": sender_id}
    if NotifiedWatermark.objects.filter(**pair, up_to__gte=message_id).exists():
        return None
    message = Message.objects.filter(pk=message_id, **pair).only("created_at").first()
    if message is None:
        return None
    online = presence.is_online(recipient_id)
    window_start = message.created_at - timedelta(seconds=settings.NOTIFY_DELAY_SECONDS)

    with transaction.atomic():
        NotifiedWatermark.objects.get_or_create(**pair)
        watermark = NotifiedWatermark.objects.select_for_update().get(**pair)
        if watermark.up_to >= message_id:
            return None
        window = Message.objects.filter(**pair, id__gt=watermark.up_to, created_at__gte=window_start)
        ids = list(window.order_by("id").values_list("id", flat=True))
        if not ids:
            return None
        watermark.up_to = ids[-1]
        watermark.save(update_fields=["up_to"])

        read_up_to = (
            Membership.objects.filter(user_id=recipient_id, peer_id=sender_id)
            .values_list("last_read_id", flat=True)
            .first()
        ) or 0
        unread = [pk for pk in ids if pk > read_up_to]
        link = TelegramLink.objects.filter(user_id=recipient_id).first()
        skip = _skip_reason(online=online, unread=bool(unread), link=link)
        if skip:
            logger.info(
                "notify: %s→%s messages %s..%s not notified: %s", sender_id, recipient_id, ids[0], ids[-1], skip
            )
            return None
        last = Message.objects.select_related("sender").get(pk=unread[-1])
        notification = Notification.objects.create(
            recipient_id=recipient_id,
            sender_id=sender_id,
            chat_id=link.chat_id,
            first_message_id=unread[0],
            last_message_id=unread[-1],
            message_count=len(unread),
            text=notification_text(sender_username=last.sender.username, count=len(unread), last_body=last.body),
        )
    logger.info("notify: claimed %s for messages %s..%s", notification, unread[0], unread[-1])
    return notification


def _skip_reason(*, online: bool, unread: bool, link: TelegramLink | None) -> str | None:
    if not telegram.is_configured():
        return "notifications are off"
    if online:
        return "online"
    if not unread:
        return "read"
    if link is None or link.chat_id is None:
        return "not linked"
    if link.muted:
        return "muted"
    return None


def sending_lease() -> timedelta:
    """How long after `sending_since` a `sending` row's Bot API call has surely ended
    (if the row is still `sending` then, its worker died): twice the call's timeout,
    plus time to start the call and record its result, and for the clocks of two
    workers to disagree a little."""
    return timedelta(seconds=2 * telegram.request_timeout() + 5)


def _backoff(attempt: int) -> float:
    return float(RETRY_BACKOFF_SECONDS[min(attempt, len(RETRY_BACKOFF_SECONDS)) - 1])


def notification_deliver(*, notification_id: int) -> float | None:
    """Send one claimed notification, if it is due. Returns in how many seconds it
    should be tried again (flood control, a network error or 5xx, not yet due, or
    another worker's call still in flight), or None when it is done with."""
    now = timezone.now()
    with transaction.atomic():
        notification = Notification.objects.select_for_update(skip_locked=True).filter(pk=notification_id).first()
        if notification is None:
            # Another worker is deciding about it right now; look again shortly.
            return 1.0
        if notification.status == Notification.Status.SENDING:
            lease_end = notification.sending_since + sending_lease()
            if lease_end > now:
                # The call may still be in flight: sending now could duplicate it.
                return (lease_end - now).total_seconds()
            if notification.attempts >= MAX_ATTEMPTS:
                notification.status = Notification.Status.UNKNOWN
                notification.error = f"the worker stopped during attempt {notification.attempts} (the last allowed)"
                notification.save(update_fields=["status", "error"])
                logger.error(
                    "notify: giving up on %s: its worker stopped during attempt %s, the last allowed; "
                    "it may or may not have been sent",
                    notification,
                    notification.attempts,
                )
                return None
            # Its worker died during (or right around) the call: send it again, rather
            # than risk never sending it. If the call had reached Telegram, this is a
            # duplicate.
            logger.warning(
                "notify: %s: the worker stopped during attempt %s; sending it again (may be a duplicate)",
                notification,
                notification.attempts,
            )
            notification.status = Notification.Status.PENDING
            notification.error = f"the worker stopped during attempt {notification.attempts}"
        if notification.status != Notification.Status.PENDING:
            return None
        if notification.next_attempt_at > now:
            return (notification.next_attempt_at - now).total_seconds()
        link = TelegramLink.objects.filter(user_id=notification.recipient_id).first()
        if link is None or link.chat_id != notification.chat_id or link.muted:
            return _cancel(notification, "unlinked or muted before it was sent")
        # A notification waiting out flood control may have been overtaken by reading.
        if Membership.objects.filter(
            user_id=notification.recipient_id,
            peer_id=notification.sender_id,
            last_read_id__gte=notification.last_message_id,
        ).exists():
            return _cancel(notification, "read before it was sent")
        notification.status = Notification.Status.SENDING
        notification.sending_since = now
        notification.attempts += 1
        notification.save(update_fields=["status", "sending_since", "attempts", "error"])

    # This attempt's row: a worker that outlived its lease (stopped, not killed) must
    # not overwrite what the attempt that took over records.
    in_flight = Notification.objects.filter(
        pk=notification.pk, status=Notification.Status.SENDING, attempts=notification.attempts
    )
    try:
        telegram.send_message(chat_id=notification.chat_id, text=notification.text)
    except telegram.RetryLater as exc:
        if notification.attempts >= MAX_ATTEMPTS:
            in_flight.update(status=Notification.Status.FAILED, error=f"gave up: {exc}")
            logger.error("notify: giving up on %s after %s attempts: %s", notification, notification.attempts, exc)
            return None
        delay = exc.retry_after if exc.retry_after is not None else _backoff(notification.attempts)
        in_flight.update(
            status=Notification.Status.PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            error=str(exc),
        )
        logger.warning("notify: %s will be retried in %ss: %s", notification, delay, exc)
        return delay
    except telegram.Unlink as exc:
        in_flight.update(status=Notification.Status.FAILED, error=str(exc))
        telegram_unlink_chat(chat_id=notification.chat_id)
        logger.warning("notify: %s: chat unlinked: %s", notification, exc)
        return None
    except telegram.GiveUp as exc:
        in_flight.update(status=Notification.Status.FAILED, error=str(exc))
        logger.error("notify: %s failed: %s", notification, exc)
        return None
    if not in_flight.update(status=Notification.Status.SENT, sent_at=timezone.now(), error=""):
        logger.warning("notify: sent %s after another attempt had taken over: a duplicate", notification)
        return None
    notification.status = Notification.Status.SENT
    logger.info("notify: sent %s", notification)
    return None


def _cancel(notification: Notification, reason: str) -> None:
    notification.status = Notification.Status.CANCELLED
    notification.error = reason
    notification.save(update_fields=["status", "error"])
    logger.info("notify: %s cancelled: %s", notification, reason)


def notifications_process(*, recipient_id: int, sender_id: int, message_id: int) -> float | None:
    """The offline check for one message: claim its window, then deliver every open
    notification of the pair (also those a killed worker left behind). Returns in how
    many seconds to run again, or None."""
    notification_claim(recipient_id=recipient_id, sender_id=sender_id, message_id=message_id)
    open_ids = Notification.objects.filter(
        recipient_id=recipient_id,
        sender_id=sender_id,
        status__in=[Notification.Status.PENDING, Notification.Status.SENDING],
    ).values_list("pk", flat=True)
    retry_in: float | None = None
    for notification_id in sorted(open_ids):
        again = notification_deliver(notification_id=notification_id)
        if again is not None:
            retry_in = again if retry_in is None else min(retry_in, again)
    return retry_in
