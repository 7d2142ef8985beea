"""Reads for messaging. Every read is scoped to the viewer: nobody can read a
conversation they are not in, and an unknown user and a user you never talked to look
the same (an empty history), as the users page already lists everyone."""

from __future__ import annotations

from django.db.models import BigIntegerField, Count, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce, Greatest

from accounts.models import User
from accounts.selectors import user_get_active
from messaging import history
from messaging.errors import NotFound
from messaging.models import Conversation, DeliveryCursor, Membership, Message
from messaging.serializers import message_dict

SYNC_LIMIT = 500


def conversation_list(*, user: User):
    """The user's conversations, most recent activity first, each with the peer, the
    last message, the unread count and how far the peer has read: one query, whatever
    the number of conversations. Each row is a `Membership` with `activity`,
    `unread_count`, `peer_read_up_to` and `conversation.last_message` loaded."""
    unread = (
        Message.objects.filter(
            conversation=OuterRef("conversation"), sender=OuterRef("peer"), id__gt=OuterRef("last_read_id")
        )
        .order_by()
        .values("conversation")
        .annotate(count=Count("*"))
        .values("count")
    )
    peer_read = Membership.objects.filter(conversation=OuterRef("conversation"), user=OuterRef("peer")).values(
        "last_read_id"
    )
    return (
        Membership.objects.filter(user=user, peer__is_active=True)
        .select_related("peer", "conversation__last_message")
        .annotate(
            activity=Coalesce("conversation__last_message_id", Value(0)),
            unread_count=Coalesce(Subquery(unread, output_field=IntegerField()), Value(0)),
            peer_read_up_to=Coalesce(Subquery(peer_read, output_field=IntegerField()), Value(0)),
        )
    )


def conversation_for(*, user: User, peer_username: str) -> tuple[User, Conversation | None]:
    """The peer and the conversation with them (None when they never talked). Raises
    `NotFound` when there is no such active user."""
    peer = user_get_active(username=peer_username)
    if peer is None or peer.pk == user.pk:
        raise NotFound(f"No user named {peer_username!r}.")
    low, high = sorted((user.pk, peer.pk))
    return peer, Conversation.objects.filter(user_low_id=low, user_high_id=high).first()


def _usernames(user: User, peer: User) -> dict[int, str]:
    return {user.pk: user.username, peer.pk: peer.username}


def message_history(*, user: User, peer_username: str, before: int | None, limit: int) -> tuple[list[dict], bool]:
    """A page of the conversation with the peer, newest first: the `limit` messages
    older than `before` (or the newest). Returns (messages, whether older ones exist).
    The newest page comes from the history cache when it can."""
    peer, conversation = conversation_for(user=user, peer_username=peer_username)
    if conversation is None:
        return [], False
    usernames = _usernames(user, peer)

    def load(after_id: int, before_id: int | None = None, count: int = history.HISTORY_CACHE_SIZE) -> list[dict]:
        rows = Message.objects.filter(conversation=conversation, id__gt=after_id)
        if before_id is not None:
            rows = rows.filter(id__lt=before_id)
        return [message_dict(m, usernames) for m in rows.order_by("-id")[:count]]

    if before is None and limit <= history.HISTORY_CACHE_SIZE:
        recent = history.history_recent(conversation_id=conversation.pk, load=load)
        page = recent[:limit]
        # Fewer cached than the cache holds means the cache holds the whole conversation.
        more = len(recent) > limit or len(recent) >= history.HISTORY_CACHE_SIZE
        return page, more
    rows = load(0, before, limit + 1)
    return rows[:limit], len(rows) > limit


def messages_since(*, user: User, since: int, limit: int = SYNC_LIMIT) -> tuple[list[Message], bool]:
    """Every message to or from the user with id > since, oldest first, at most
    `limit`; and whether there are more."""
    rows = list(
        Message.objects.filter(Q(sender=user) | Q(recipient=user), id__gt=since)
        .select_related("sender", "recipient")
        .order_by("id")[: limit + 1]
    )
    return rows[:limit], len(rows) > limit


def newest_message_id_expression():
    """The newest message id to or from the user of the row (0 when none), for
    `annotate`: their delivery cursor, or, where messages were written without one
    (imports, factories), the newest of their messages. One query with the user."""
    newest = {
        field: Subquery(Message.objects.filter(**{field: OuterRef("pk")}).order_by("-id").values("id")[:1])
        for field in ("sender", "recipient")
    }
    return Coalesce(
        Subquery(DeliveryCursor.objects.filter(user=OuterRef("pk")).values("last_message_id")[:1]),
        Greatest(Coalesce(newest["sender"], Value(0)), Coalesce(newest["recipient"], Value(0))),
        output_field=BigIntegerField(),
    )


def last_message_id(*, user: User) -> int:
    """The newest message id to or from the user (0 when none)."""
    newest = getattr(user, "newest_message_id", None)
    if newest is not None:  # loaded with the user (messaging.ws_auth)
        return newest
    return User.objects.filter(pk=user.pk).values_list(newest_message_id_expression(), flat=True).first() or 0


def conversation_peer_ids(*, user_id: int) -> list[int]:
    """Everyone the user shares a conversation with."""
    return list(Membership.objects.filter(user_id=user_id).values_list("peer_id", flat=True))


def active_user_id(*, username: str) -> int | None:
    return User.objects.filter(username=username, is_active=True).values_list("id", flat=True).first()
