from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

MAX_BODY_LENGTH = 4000
MAX_CLIENT_ID_LENGTH = 64


class Conversation(models.Model):
    """A direct conversation: exactly one per pair of users, whoever starts it.
    `user_low` has the smaller id, so the pair has one spelling."""

    user_low = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    user_high = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # The newest message, kept on every send so that the conversation list is ordered
    # by activity and shows its last message without scanning messages.
    last_message = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user_low", "user_high"], name="conversation_one_per_pair"),
            models.CheckConstraint(condition=Q(user_low__lt=F("user_high")), name="conversation_ordered_pair"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk}: {self.user_low_id} ↔ {self.user_high_id}"


class Membership(models.Model):
    """One participant's side of a conversation: who the other one is, and how far
    this participant has read."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    peer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    last_read_id = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "peer"], name="membership_one_per_peer"),
            models.UniqueConstraint(fields=["conversation", "user"], name="membership_one_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in #{self.conversation_id} (read up to {self.last_read_id})"


class Message(models.Model):
    # BigAutoField: a database sequence, so ids grow with time across every process.
    id = models.BigAutoField(primary_key=True)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sent_messages")
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="received_messages")
    body = models.TextField(max_length=MAX_BODY_LENGTH)
    created_at = models.DateTimeField(default=timezone.now)
    # What the sender's client called this message; a retry with the same id is the
    # same message.
    client_id = models.CharField(max_length=MAX_CLIENT_ID_LENGTH, null=True, blank=True)  # noqa: DJ001 - null: none given, unique only when given

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sender", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_unique_per_sender",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "-id"], name="message_history"),
            models.Index(fields=["recipient", "id"], name="message_inbox"),
            models.Index(fields=["sender", "id"], name="message_outbox"),
            models.Index(fields=["created_at"], name="message_created"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.sender_id}→{self.recipient_id}: {self.body[:40]}"


class DeliveryCursor(models.Model):
    """The newest message to or from each user, moved under the user's lock in the
    transaction that stores the message. Every delivered message carries the previous
    value for both people, so each socket can tell a message that overtook another
    one (published by another server process) or one that was lost in transit, and
    put its stream back in order."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="delivery_cursor"
    )
    last_message_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.user_id} up to {self.last_message_id}"
