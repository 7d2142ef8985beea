"""How messages look on the wire (REST and WebSocket alike)."""

from __future__ import annotations

from datetime import UTC, datetime

from rest_framework import serializers

from accounts.serializers import UserSerializer
from messaging.models import MAX_BODY_LENGTH, MAX_CLIENT_ID_LENGTH, Message


def iso_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def message_dict(message: Message, usernames: dict[int, str] | None = None) -> dict:
    """`{id, sender, recipient, body, created_at, client_id}`; `usernames` maps user ids
    to names when sender and recipient are not loaded on the message."""
    if usernames is None:
        sender, recipient = message.sender.username, message.recipient.username
    else:
        sender, recipient = usernames[message.sender_id], usernames[message.recipient_id]
    return {
        "id": message.pk,
        "sender": sender,
        "recipient": recipient,
        "body": message.body,
        "created_at": iso_utc(message.created_at),
        "client_id": message.client_id,
    }


class MessageSerializer(serializers.Serializer):
    """For the OpenAPI schema; the views return `message_dict` output."""

    id = serializers.IntegerField(read_only=True)
    sender = serializers.CharField(read_only=True)
    recipient = serializers.CharField(read_only=True)
    body = serializers.CharField(max_length=MAX_BODY_LENGTH, trim_whitespace=False)
    created_at = serializers.DateTimeField(read_only=True)
    client_id = serializers.CharField(
        max_length=MAX_CLIENT_ID_LENGTH, required=False, allow_null=True, default=None, write_only=False
    )


class MessageSendSerializer(serializers.Serializer):
    body = serializers.CharField(max_length=MAX_BODY_LENGTH, trim_whitespace=False)
    client_id = serializers.CharField(max_length=MAX_CLIENT_ID_LENGTH, required=False, allow_null=True, default=None)


class ReadSerializer(serializers.Serializer):
    up_to = serializers.IntegerField(min_value=0)


class ConversationSerializer(serializers.Serializer):
    """For the OpenAPI schema of the conversation list."""

    peer = UserSerializer()
    last_message = MessageSerializer(allow_null=True)
    unread_count = serializers.IntegerField()
    peer_read_up_to = serializers.IntegerField()
