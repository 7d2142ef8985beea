"""Writes for messaging. Every side effect (cache, delivery to sockets, signals for
notifications) happens after commit, so nobody is ever shown a row that rolled back."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest

from accounts.models import User
from accounts.selectors import user_get_active
from messaging import history
from messaging.delivery import deliver
from messaging.errors import InvalidInput, NotFound
from messaging.models import MAX_BODY_LENGTH, MAX_CLIENT_ID_LENGTH, Conversation, Membership, Message
from messaging.ratelimit import send_rate_check
from messaging.serializers import message_dict
from messaging.signals import message_stored, messages_read

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    message: Message
    created: bool


def _clean_body(body: object) -> str:
    if not isinstance(body, str):
        raise InvalidInput("`body` must be a string.")
    if "\x00" in body:
        raise InvalidInput("`body` must not contain NUL characters.")
    if not body.strip():
        raise InvalidInput("`body` must not be empty.")
    if len(body) > MAX_BODY_LENGTH:
        raise InvalidInput(f"`body` must be at most {MAX_BODY_LENGTH} characters.")
    return body


def _clean_client_id(client_id: object) -> str | None:
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not client_id or "\x00" in client_id:
        raise InvalidInput("`client_id` must be a non-empty string or null.")
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        raise InvalidInput(f"`client_id` must be at most {MAX_CLIENT_ID_LENGTH} characters.")
    return client_id


def _lock_users(*user_ids: int) -> None:
    """Serialize the sends that involve any of these users until commit.

    Call inside a transaction, before the message id is drawn. Then the messages of
    one user (and so of one conversation) commit in id order, which is what lets
    `sync since <id>` and the history cache never miss a message that committed late.
    SQLite serializes all writes anyway."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT " + ", ".join(["pg_advisory_xact_lock(%s)"] * len(user_ids)),
            sorted(user_ids),
        )


def conversation_get_or_create(*, user: User, peer: User) -> Conversation:
    low, high = sorted((user.pk, peer.pk))
    conversation = Conversation.objects.filter(user_low_id=low, user_high_id=high).first()
    if conversation is not None:
        return conversation
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(user_low_id=low, user_high_id=high)
            Membership.objects.bulk_create(
                [
                    Membership(conversation=conversation, user_id=low, peer_id=high),
                    Membership(conversation=conversation, user_id=high, peer_id=low),
                ]
            )
    except IntegrityError:  # created concurrently by the other participant
        conversation = Conversation.objects.get(user_low_id=low, user_high_id=high)
    return conversation


def _existing(sender: User, client_id: str, recipient: User) -> SendResult:
    message = Message.objects.select_related("sender", "recipient").get(sender=sender, client_id=client_id)
    if message.recipient_id != recipient.pk:
        raise InvalidInput("This `client_id` was already used for a message to someone else.")
    return SendResult(message=message, created=False)


def message_send(
    *,
    sender: User,
    recipient_username: str,
    body: object,
    client_id: object = None,
    origin_channel: str | None = None,
) -> SendResult:
    """Store a message from `sender` and, after commit, deliver it to every socket of
    both people and announce it (`message_stored`).

    Idempotent on `(sender, client_id)`: a retry returns the stored message with
    `created=False` and delivers nothing again. Raises `InvalidInput`, `NotFound`
    (no such active user) or `RateLimited`. `origin_channel` is the sending socket's
    channel, which gets an `ack` from its consumer instead of a `message` frame.
    """
    body = _clean_body(body)
    client_id = _clean_client_id(client_id)
    if not isinstance(recipient_username, str) or not recipient_username:
        raise InvalidInput("`to` must be a username.")
    recipient = user_get_active(username=recipient_username)
    if recipient is None:
        raise NotFound(f"No user named {recipient_username!r}.")
    if recipient.pk == sender.pk:
        raise InvalidInput("You cannot send a message to yourself.")
    if client_id is not None and Message.objects.filter(sender=sender, client_id=client_id).exists():
        return _existing(sender, client_id, recipient)
    send_rate_check(user_id=sender.pk)

    with transaction.atomic():
        conversation = conversation_get_or_create(user=sender, peer=recipient)
        _lock_users(sender.pk, recipient.pk)
        try:
            with transaction.atomic():
                message = Message.objects.create(
                    conversation=conversation, sender=sender, recipient=recipient, body=body, client_id=client_id
                )
        except IntegrityError:
            if client_id is None:
                raise
            # The same retry raced us and committed first.
            return _existing(sender, client_id, recipient)
        Conversation.objects.filter(pk=conversation.pk).update(
            last_message_id=Greatest(Coalesce(F("last_message_id"), Value(0)), Value(message.pk))
        )
        # Writing a message means having read the conversation up to it.
        Membership.objects.filter(conversation=conversation, user=sender, last_read_id__lt=message.pk).update(
            last_read_id=message.pk
        )
        transaction.on_commit(lambda: _after_message_stored(message, origin_channel))
    return SendResult(message=message, created=True)


def _after_message_stored(message: Message, origin_channel: str | None) -> None:
    payload = message_dict(message)
    try:
        history.history_cached_add(conversation_id=message.conversation_id, message=payload)
    except Exception:
        # The cache may be down; drop the entry so that it refills from PostgreSQL.
        logger.exception("history cache update failed for message %s", message.pk)
        _drop_history_quietly(message.conversation_id)
    deliver(
        user_ids=[message.sender_id, message.recipient_id],
        event={"type": "chat.message", "message": payload, "origin": origin_channel},
    )
    message_stored.send(sender=Message, message=message)


def _drop_history_quietly(conversation_id: int) -> None:
    try:
        history.history_cached_drop(conversation_id=conversation_id)
    except Exception:
        logger.exception("history cache drop failed for conversation %s", conversation_id)


def conversation_mark_read(*, user: User, peer_username: str, up_to: object) -> int:
    """Move the user's read marker in their conversation with the peer forward to
    `up_to` (clamped to the newest message). Returns the marker. The peer's sockets
    (and the user's other ones) learn it after commit."""
    if not isinstance(up_to, int) or isinstance(up_to, bool) or up_to < 0:
        raise InvalidInput("`up_to` must be a message id.")
    if not isinstance(peer_username, str) or not peer_username:
        raise InvalidInput("`peer` must be a username.")
    membership = (
        Membership.objects.select_related("conversation", "peer")
        .filter(user=user, peer__username=peer_username, peer__is_active=True)
        .first()
    )
    if membership is None:
        raise NotFound(f"No conversation with {peer_username!r}.")
    up_to = min(up_to, membership.conversation.last_message_id or 0)
    with transaction.atomic():
        moved = Membership.objects.filter(pk=membership.pk, last_read_id__lt=up_to).update(last_read_id=up_to)
        if moved:
            peer = membership.peer
            event = {"type": "chat.read", "by": user.username, "peer": peer.username, "up_to": up_to}
            transaction.on_commit(lambda: _after_read(user, peer, up_to, event))
    return max(up_to, membership.last_read_id)


def _after_read(user: User, peer: User, up_to: int, event: dict) -> None:
    deliver(user_ids=[peer.pk, user.pk], event=event)
    messages_read.send(sender=Membership, user_id=user.pk, peer_id=peer.pk, up_to=up_to)
