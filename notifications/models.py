from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class TelegramLink(models.Model):
    """A user's Telegram chat, and whether they want to hear from it.

    The row outlives an unlink (`chat_id` becomes null) so that the mute switch is
    remembered. One chat belongs to at most one account: linking it again moves it."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="telegram_link")
    chat_id = models.BigIntegerField(null=True, blank=True, unique=True)
    muted = models.BooleanField(default=False)
    linked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        state = f"chat {self.chat_id}" if self.chat_id else "not linked"
        return f"{self.user_id}: {state}{' (muted)' if self.muted else ''}"

    @property
    def is_linked(self) -> bool:
        return self.chat_id is not None


class TelegramLinkToken(models.Model):
    """A one-time token that links the Telegram chat which presents it (`/start <token>`)
    to `user`. Only a hash is stored: the database never holds a usable token."""

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token of {self.user_id}, expires {self.expires_at:%Y-%m-%d %H:%M}"


class NotifiedWatermark(models.Model):
    """How far the messages from `sender` to `recipient` have been dealt with by the
    offline notifier (notified, or skipped because the recipient was online, had read
    them, had muted or had no link). It only moves forward, in the same transaction
    that claims messages into a `Notification`, so no message is claimed twice."""

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    up_to = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["recipient", "sender"], name="watermark_one_per_pair"),
        ]

    def __str__(self) -> str:
        return f"{self.sender_id}→{self.recipient_id} up to {self.up_to}"


class Notification(models.Model):
    """One Telegram message about one or more chat messages from one sender.

    `pending` → `sending` (committed before the Bot API call) → `sent` or `failed`
    (or back to `pending` to retry, or `cancelled` when read, muted or unlinked first).
    A row still `sending` once the call has surely ended (`services.sending_lease()`)
    means its worker died during the call, which may or may not have reached Telegram:
    it is sent again (a rare duplicate rather than a lost notification), unless it
    has had `MAX_ATTEMPTS` attempts, when it becomes `unknown`."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"
        CANCELLED = "cancelled"
        UNKNOWN = "unknown"

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    chat_id = models.BigIntegerField()
    first_message_id = models.BigIntegerField()
    last_message_id = models.BigIntegerField(unique=True)
    message_count = models.PositiveIntegerField()
    text = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    sending_since = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["recipient", "sender"],
                condition=Q(status__in=["pending", "sending"]),
                name="notification_open",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.sender_id}→{self.recipient_id} ×{self.message_count} ({self.status})"
