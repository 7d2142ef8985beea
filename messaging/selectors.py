"""Reads for messaging. Every read is scoped to the viewer: nobody can read a
conversation they are not in, and an unknown user and a user you never talked to look
the same (an empty history), as the users page already lists everyone."""

from __future__ import annotations

import functools

from django.db import connection
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from accounts.models import User
from accounts.selectors import LEAN_USER_COLUMNS, user_from_lean_row
from chatproject.db import stored_datetime
from messaging import history
from messaging.errors import NotFound
from messaging.models import DeliveryCursor, Membership, Message
from messaging.serializers import iso_utc

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


@functools.cache
def _user_with_conversation_sql() -> str:
    # Written out: building the subquery with the ORM cost more than running it.
    user, membership = User._meta.db_table, Membership._meta.db_table
    lean = ", ".join(f"u.{connection.ops.quote_name(column)}" for column in LEAN_USER_COLUMNS)
    return (
        f"SELECT {lean}, p.id, (SELECT m.conversation_id FROM {membership} m"  # noqa: S608 - table names from the models, values as parameters
        f" WHERE m.user_id = u.id AND m.peer_id = p.id)"
        f" FROM {user} u LEFT JOIN {user} p ON p.username = %s AND p.is_active WHERE u.id = %s"
    )


def _read_user_with_conversation(user_id: int, peer_username: str) -> tuple | None:
    """The user's `LEAN_USER_COLUMNS`, then the peer's id (None when there is no such
    active user) and the id of their conversation (None when they never talked); None
    when there is no such user."""
    # No name has a NUL, and PostgreSQL refuses one in a query: NULL matches nobody.
    name = None if "\x00" in peer_username else peer_username
    with connection.cursor() as cursor:
        cursor.execute(_user_with_conversation_sql(), [name, user_id])
        return cursor.fetchone()


def _peer_of(row: tuple | None) -> tuple[int, int | None] | None:
    if row is None or row[-2] is None:
        return None
    return row[-2], row[-1]


def conversation_for(*, user: User, peer_username: str) -> tuple[User, int | None]:
    """The peer (`id` and `username` only) and the id of the conversation with them
    (None when they never talked), in one query, or none when `user` was loaded with
    it (`user_with_conversation`). Raises `NotFound` when there is no such active
    user."""
    prefetched = user.__dict__.get("conversation_prefetch")
    if prefetched is None or prefetched[0] != peer_username:
        prefetched = (peer_username, _peer_of(_read_user_with_conversation(user.pk, peer_username)))
    peer = prefetched[1]
    if peer is None or peer[0] == user.pk:
        raise NotFound(f"No user named {peer_username!r}.")
    return User(id=peer[0], username=peer_username), peer[1]


def user_with_conversation(*, user_id: int, peer_username: str) -> User | None:
    """The user as `accounts.selectors.user_lean` loads them, with what
    `conversation_for(user=..., peer_username=...)` would read, in one query: a
    request about one conversation (a history page) then makes one query, not two.
    None when there is no such user."""
    row = _read_user_with_conversation(user_id, peer_username)
    if row is None:
        return None
    user = user_from_lean_row(row[: len(LEAN_USER_COLUMNS)])
    user.conversation_prefetch = (peer_username, _peer_of(row))
    return user


def _usernames(user: User, peer: User) -> dict[int, str]:
    return {user.pk: user.username, peer.pk: peer.username}


_MESSAGE_FIELDS = ("id", "sender_id", "recipient_id", "body", "created_at", "client_id")


@functools.cache
def _history_sql(before: bool) -> str:
    """Messages of a conversation with id > after (and < before), newest first, at most
    `count`: what the history page and the cache's fill read."""
    columns = ", ".join(connection.ops.quote_name(Message._meta.get_field(name).column) for name in _MESSAGE_FIELDS)
    older = " AND id < %s" if before else ""
    return (
        f"SELECT {columns} FROM {Message._meta.db_table}"  # noqa: S608 - names from the model, values as parameters
        f" WHERE conversation_id = %s AND id > %s{older} ORDER BY id DESC LIMIT %s"
    )


def message_history(*, user: User, peer_username: str, before: int | None, limit: int) -> tuple[list[dict], bool]:
    """A page of the conversation with the peer, newest first: the `limit` messages
    older than `before` (or the newest). Returns (messages, whether older ones exist).
    The newest page comes from the history cache when it can."""
    peer, conversation_id = conversation_for(user=user, peer_username=peer_username)
    if conversation_id is None:
        return [], False
    usernames = _usernames(user, peer)

    def load(after_id: int, before_id: int | None = None, count: int = history.HISTORY_CACHE_SIZE) -> list[dict]:
        # Tuples from a plain cursor, not model instances: building 50 models was most
        # of a page's cost, and building the query with the ORM a quarter of what was
        # left.
        params = [conversation_id, after_id, *([] if before_id is None else [before_id]), count]
        with connection.cursor() as cursor:
            cursor.execute(_history_sql(before_id is not None), params)
            rows = cursor.fetchall()
        return [
            {
                "id": pk,
                "sender": usernames[sender_id],
                "recipient": usernames[recipient_id],
                "body": body,
                "created_at": iso_utc(stored_datetime(created_at)),
                "client_id": client_id,
            }
            for pk, sender_id, recipient_id, body, created_at, client_id in rows
        ]

    if before is None and limit <= history.HISTORY_CACHE_SIZE:
        recent = history.history_recent(conversation_id=conversation_id, load=load)
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


@functools.cache
def _socket_user_sql(vendor: str) -> str:
    # Written out rather than built with the ORM on every connect: compiling the
    # subqueries cost more CPU than running them. COALESCE stops at the cursor when
    # there is one; the subqueries are for messages written without one (imports,
    # factories) and use the outbox and inbox indexes.
    user, message, cursor = User._meta.db_table, Message._meta.db_table, DeliveryCursor._meta.db_table
    membership = Membership._meta.db_table
    peers = f"SELECT p.peer_id FROM {membership} p WHERE p.user_id = u.id"  # noqa: S608 - table names from the models
    peer_ids = f"ARRAY({peers})" if vendor == "postgresql" else f"(SELECT group_concat(q.peer_id) FROM ({peers}) q)"  # noqa: S608
    lean = ", ".join(f"u.{connection.ops.quote_name(column)}" for column in LEAN_USER_COLUMNS)
    return (
        f"SELECT {lean}, COALESCE("  # noqa: S608 - table names from the models, the id as a parameter
        f" (SELECT c.last_message_id FROM {cursor} c WHERE c.user_id = u.id),"
        f" (SELECT MAX(n.id) FROM ("
        f"  SELECT MAX(m.id) AS id FROM {message} m WHERE m.sender_id = u.id"
        f"  UNION ALL SELECT MAX(m.id) AS id FROM {message} m WHERE m.recipient_id = u.id) n),"
        f" 0) AS newest_message_id, {peer_ids} AS peer_ids"
        f" FROM {user} u WHERE u.id = %s"
    )


def socket_user(*, user_id: int) -> User | None:
    """The user a new socket belongs to, in one query, with
    - `newest_message_id`: the newest message id to or from them (0 when none), which
      the socket's `ready` frame carries;
    - `peer_ids`: everyone they share a conversation with (told when they come online;
      the socket drops the list once it has been used).
    Only the fields a socket uses are loaded (the instance lives as long as the
    socket); reading another one would query, which async code must not do. A plain
    cursor: a raw queryset's column mapping cost as much as the query."""
    with connection.cursor() as cursor:
        cursor.execute(_socket_user_sql(connection.vendor), [user_id])
        row = cursor.fetchone()
    if row is None:
        return None
    *lean, newest_message_id, peer_ids = row
    user = user_from_lean_row(lean)
    user.newest_message_id = newest_message_id
    if peer_ids is None or isinstance(peer_ids, str):  # SQLite: comma-separated, NULL for none
        peer_ids = [int(peer_id) for peer_id in peer_ids.split(",")] if peer_ids else []
    user.peer_ids = peer_ids
    return user


def last_message_id(*, user: User) -> int:
    """The newest message id to or from the user (0 when none)."""
    newest = getattr(user, "newest_message_id", None)
    if newest is None:  # not loaded with the user (messaging.ws_auth)
        loaded = socket_user(user_id=user.pk)
        newest = loaded.newest_message_id if loaded is not None else 0
    return newest


def conversation_peer_ids(*, user_id: int) -> list[int]:
    """Everyone the user shares a conversation with."""
    return list(Membership.objects.filter(user_id=user_id).values_list("peer_id", flat=True))


def active_user_id(*, username: str) -> int | None:
    return User.objects.filter(username=username, is_active=True).values_list("id", flat=True).first()
