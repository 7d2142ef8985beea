"""Writes for messaging. Every side effect (cache, delivery to sockets, signals for
notifications) happens after commit, so nobody is ever shown a row that rolled back."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Value
from django.db.models.functions import Coalesce, Greatest

from accounts.models import User
from messaging import history
from messaging.delivery import deliver, deliver_many
from messaging.errors import ChatError, InvalidInput, NotFound
from messaging.models import (
    MAX_BODY_LENGTH,
    MAX_CLIENT_ID_LENGTH,
    Conversation,
    DeliveryCursor,
    Membership,
    Message,
)
from messaging.ratelimit import send_rate_take_many
from messaging.serializers import message_dict
from messaging.signals import message_stored, messages_read

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    message: Message
    created: bool


def text_is_storable(text: str) -> bool:
    """Whether the database can store (or be asked about) this text. JSON carries NUL
    (`\\u0000`) and lone surrogates (`\\ud800`, not UTF-8), which PostgreSQL refuses
    and SQLite cannot encode: a query with them fails instead of finding nothing."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean_body(body: object) -> str:
    if not isinstance(body, str):
        raise InvalidInput("`body` must be a string.")
    if not text_is_storable(body):
        raise InvalidInput("`body` must not contain NUL characters or lone surrogates.")
    if not body.strip():
        raise InvalidInput("`body` must not be empty.")
    if len(body) > MAX_BODY_LENGTH:
        raise InvalidInput(f"`body` must be at most {MAX_BODY_LENGTH} characters.")
    return body


def _clean_client_id(client_id: object) -> str | None:
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not client_id or not text_is_storable(client_id):
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


@dataclass(frozen=True)
class SendRequest:
    """One send, as a client asked for it (fields unchecked)."""

    sender: User
    recipient_username: object
    body: object
    client_id: object = None
    origin_channel: str | None = None


def message_send(
    *,
    sender: User,
    recipient_username: object,
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
    request = SendRequest(sender, recipient_username, body, client_id, origin_channel)
    outcome = message_send_many(requests=[request])[0]
    if isinstance(outcome, ChatError):
        raise outcome
    return outcome


def message_send_many(*, requests: list[SendRequest]) -> list[SendResult | ChatError]:
    """`message_send` for many requests at once, stored in one transaction (group
    commit): one outcome per request, in order, each exactly what `message_send` would
    have returned or raised for it alone. A bad request fails alone."""
    outcomes: list[SendResult | ChatError | None] = [None] * len(requests)
    pending: dict[int, tuple[str, str | None]] = {}
    for index, request in enumerate(requests):
        try:
            body, client_id = _clean_body(request.body), _clean_client_id(request.client_id)
            if not isinstance(request.recipient_username, str) or not request.recipient_username:
                raise InvalidInput("`to` must be a username.")
            if not text_is_storable(request.recipient_username):
                raise NotFound(f"No user named {request.recipient_username!r}.")
        except ChatError as exc:
            outcomes[index] = exc
        else:
            pending[index] = (body, client_id)

    recipients = _active_users_named({requests[i].recipient_username for i in pending})
    for index in list(pending):
        request = requests[index]
        recipient = recipients.get(request.recipient_username)
        if recipient is None:
            outcomes[index] = NotFound(f"No user named {request.recipient_username!r}.")
        elif recipient.pk == request.sender.pk:
            outcomes[index] = InvalidInput("You cannot send a message to yourself.")
        else:
            continue
        del pending[index]

    # The same (sender, client_id) twice in one batch: the later ones are retries.
    first_of: dict[tuple[int, str], int] = {}
    repeats: dict[int, int] = {}
    for index in sorted(pending):
        client_id = pending[index][1]
        if client_id is not None:
            key = (requests[index].sender.pk, client_id)
            if key in first_of:
                repeats[index] = first_of[key]
                del pending[index]
            else:
                first_of[key] = index
    # Retries of stored messages are found under the user locks in `_store` (one query
    # per batch, not two); until then they count towards the rate like any send.

    by_sender: dict[int, list[int]] = {}
    for index in sorted(pending):
        by_sender.setdefault(requests[index].sender.pk, []).append(index)
    if by_sender:
        allowed, limited = send_rate_take_many(counts={user_id: len(indexes) for user_id, indexes in by_sender.items()})
        for sender_id, indexes in by_sender.items():
            for index in indexes[allowed[sender_id] :]:
                outcomes[index] = limited
                del pending[index]

    if pending:
        for attempt in range(2):
            try:
                if connection.vendor == "postgresql":
                    _store_postgresql(requests, pending, outcomes, recipients)
                else:
                    _store(requests, pending, outcomes, recipients)
                break
            except IntegrityError:
                # A retry of one of these committed concurrently (SQLite only: on
                # PostgreSQL the user locks make `_store` see it); store again.
                if attempt:
                    raise

    for index, first in repeats.items():
        outcome = outcomes[first]
        outcomes[index] = SendResult(outcome.message, created=False) if isinstance(outcome, SendResult) else outcome
    return outcomes  # type: ignore[return-value]


def _active_users_named(names: set[str]) -> dict[str, User]:
    """The active users with these names, as `User`s with `id` and `username` only:
    written out, since every send looks its recipient up."""
    if not names:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, username FROM {User._meta.db_table}"  # noqa: S608 - the table name from the model, names as parameters
            f" WHERE is_active AND username IN ({', '.join(['%s'] * len(names))})",
            list(names),
        )
        return {username: User(id=user_id, username=username, is_active=True) for user_id, username in cursor}


def _resolve_retries(
    requests: list[SendRequest],
    pending: dict[int, tuple[str, str | None]],
    outcomes: list,
    recipients: dict[str, User],
) -> None:
    """Answer the requests whose (sender, client_id) is already stored."""
    keys = {(requests[i].sender.pk, pending[i][1]): i for i in pending if pending[i][1] is not None}
    if not keys:
        return
    # Two IN lists compile far faster than an OR of pairs; the pairs are matched here.
    candidates = Message.objects.filter(
        sender_id__in={sender_id for sender_id, _ in keys}, client_id__in={client_id for _, client_id in keys}
    ).select_related("sender", "recipient")
    for message in candidates:
        index = keys.get((message.sender_id, message.client_id))
        if index is None:
            continue
        recipient = recipients[requests[index].recipient_username]
        if message.recipient_id != recipient.pk:
            outcomes[index] = InvalidInput("This `client_id` was already used for a message to someone else.")
        else:
            outcomes[index] = SendResult(message=message, created=False)
        del pending[index]


def _conversations(pairs: set[tuple[int, int]], users: dict[int, User]) -> dict[tuple[int, int], Conversation]:
    candidates = Conversation.objects.filter(
        user_low_id__in={low for low, _ in pairs}, user_high_id__in={high for _, high in pairs}
    )
    found = {(c.user_low_id, c.user_high_id): c for c in candidates if (c.user_low_id, c.user_high_id) in pairs}
    for low, high in pairs - found.keys():
        found[(low, high)] = conversation_get_or_create(user=users[low], peer=users[high])
    return found


def _store(
    requests: list[SendRequest],
    pending: dict[int, tuple[str, str | None]],
    outcomes: list,
    recipients: dict[str, User],
) -> None:
    order = sorted(pending)
    pair_of: dict[int, tuple[User, User]] = {
        i: (requests[i].sender, recipients[requests[i].recipient_username]) for i in order
    }
    users = {u.pk: u for pair in pair_of.values() for u in pair}
    with transaction.atomic():
        conversations = _conversations({_pair_key(s, r) for s, r in pair_of.values()}, users)
        _lock_users(*users)
        # Under the locks, a concurrent retry of the same send has either committed
        # (and is found here) or will find ours.
        _resolve_retries(requests, pending, outcomes, recipients)
        order = [i for i in order if i in pending]
        if not order:
            return
        cursors = dict(DeliveryCursor.objects.filter(user_id__in=users).values_list("user_id", "last_message_id"))
        messages = Message.objects.bulk_create(
            [
                Message(
                    conversation=conversations[_pair_key(*pair_of[i])],
                    sender=pair_of[i][0],
                    recipient=pair_of[i][1],
                    body=pending[i][0],
                    client_id=pending[i][1],
                )
                for i in order
            ]
        )
        newest: dict[int, int] = {}
        read_by_sender: dict[tuple[int, int], int] = {}
        previous: dict[int, dict[int, int]] = {}
        for message in messages:
            previous[message.pk] = {
                user_id: cursors.get(user_id, 0) for user_id in (message.sender_id, message.recipient_id)
            }
            cursors[message.sender_id] = cursors[message.recipient_id] = message.pk
            newest[message.conversation_id] = max(newest.get(message.conversation_id, 0), message.pk)
            key = (message.conversation_id, message.sender_id)
            read_by_sender[key] = max(read_by_sender.get(key, 0), message.pk)
        _move_markers(newest, read_by_sender)
        DeliveryCursor.objects.bulk_create(
            [DeliveryCursor(user_id=user_id, last_message_id=last) for user_id, last in cursors.items()],
            update_conflicts=True,
            unique_fields=["user"],
            update_fields=["last_message_id"],
        )
        origins = {}
        for index, message in zip(order, messages, strict=True):
            outcomes[index] = SendResult(message=message, created=True)
            origins[message.pk] = requests[index].origin_channel
        transaction.on_commit(lambda: _after_messages_stored(messages, origins, previous))


def _store_postgresql(
    requests: list[SendRequest],
    pending: dict[int, tuple[str, str | None]],
    outcomes: list,
    recipients: dict[str, User],
) -> None:
    """`_store`, as one call of the database function `messaging_store_messages`
    (migration 0004): conversations, user locks, retry lookup, the insert, each
    person's previous message id, and the markers, in one round trip. Building those
    ten statements with the ORM was most of the CPU a send cost.

    The call is one statement, so in autocommit it is its own transaction: no BEGIN
    and COMMIT round trips (two of a paced send's three to PostgreSQL). Its advisory
    locks are held until that commit, and `on_commit` runs once it is done. Inside a
    caller's transaction it gets a savepoint, as `atomic()` would give it."""
    order = sorted(pending)
    recipient_of = {i: recipients[requests[i].recipient_username] for i in order}
    with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT * FROM messaging_store_messages(%s::bigint[], %s::bigint[], %s::text[], %s::text[])",
                [
                    [requests[i].sender.pk for i in order],
                    [recipient_of[i].pk for i in order],
                    [pending[i][0] for i in order],
                    [pending[i][1] for i in order],
                ],
            )
            rows = cursor.fetchall()
        messages: list[Message] = []
        origins: dict[int, str | None] = {}
        previous: dict[int, dict[int, int]] = {}
        for position, message_id, conversation_id, recipient_id, body, created_at, created, prev_s, prev_r in rows:
            index = order[position - 1]
            request, recipient = requests[index], recipient_of[index]
            if not created and recipient_id != recipient.pk:
                outcomes[index] = InvalidInput("This `client_id` was already used for a message to someone else.")
                continue
            message = Message(
                id=message_id,
                conversation_id=conversation_id,
                sender=request.sender,
                recipient=recipient,
                body=body,
                created_at=created_at,
                client_id=pending[index][1],
            )
            outcomes[index] = SendResult(message=message, created=created)
            if created:
                messages.append(message)
                origins[message_id] = request.origin_channel
                previous[message_id] = {request.sender.pk: prev_s, recipient.pk: prev_r}
        messages.sort(key=lambda m: m.pk)
        if messages:
            transaction.on_commit(lambda: _after_messages_stored(messages, origins, previous))


def _move_markers(newest: dict[int, int], read_by_sender: dict[tuple[int, int], int]) -> None:
    """Move each conversation's last message, and each sender's read marker (writing
    a message means having read the conversation up to it), forward: one statement
    each for the whole batch."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Conversation._meta.db_table} AS c"  # noqa: S608 - table names from the models, values as parameters
                " SET last_message_id = GREATEST(COALESCE(c.last_message_id, 0), v.newest)"
                f" FROM (VALUES {', '.join(['(%s::bigint, %s::bigint)'] * len(newest))}) AS v(id, newest)"
                " WHERE c.id = v.id",
                [value for item in newest.items() for value in item],
            )
            cursor.execute(
                f"UPDATE {Membership._meta.db_table} AS m SET last_read_id = GREATEST(m.last_read_id, v.up_to)"  # noqa: S608 - table names from the models, values as parameters
                f" FROM (VALUES {', '.join(['(%s::bigint, %s::bigint, %s::bigint)'] * len(read_by_sender))})"
                " AS v(conversation_id, user_id, up_to)"
                " WHERE m.conversation_id = v.conversation_id AND m.user_id = v.user_id",
                [value for (c, u), m in read_by_sender.items() for value in (c, u, m)],
            )
        return
    for conversation_id, message_id in newest.items():
        Conversation.objects.filter(pk=conversation_id).update(
            last_message_id=Greatest(Coalesce(F("last_message_id"), Value(0)), Value(message_id))
        )
    for (conversation_id, user_id), message_id in read_by_sender.items():
        Membership.objects.filter(conversation_id=conversation_id, user_id=user_id).update(
            last_read_id=Greatest(F("last_read_id"), Value(message_id))
        )


def _pair_key(a: User, b: User) -> tuple[int, int]:
    return (a.pk, b.pk) if a.pk < b.pk else (b.pk, a.pk)


def _after_messages_stored(
    messages: list[Message], origins: dict[int, str | None], previous: dict[int, dict[int, int]]
) -> None:
    payloads = [message_dict(m) for m in messages]
    by_conversation: dict[int, list[dict]] = {}
    for message, payload in zip(messages, payloads, strict=True):
        by_conversation.setdefault(message.conversation_id, []).append(payload)
    try:
        history.history_cached_add_many(by_conversation=by_conversation)
    except Exception:
        # The cache may be down; drop the entries so that they refill from PostgreSQL.
        logger.exception("history cache update failed for %d conversation(s)", len(by_conversation))
        for conversation_id in by_conversation:
            _drop_history_quietly(conversation_id)
    # One event per person for the whole batch, their messages in id order, each with
    # the id of their message before it (messaging.ordering).
    items_of: dict[int, list[dict]] = {}
    for message, payload in zip(messages, payloads, strict=True):
        origin = origins.get(message.pk)
        for user_id in (message.sender_id, message.recipient_id):
            items_of.setdefault(user_id, []).append(
                {"message": payload, "origin": origin, "prev": previous[message.pk][user_id]}
            )
    deliver_many(items=[([user_id], {"type": "chat.messages", "items": items}) for user_id, items in items_of.items()])
    for message in messages:
        message_stored.send(sender=Message, message=message)


def _drop_history_quietly(conversation_id: int) -> None:
    try:
        history.history_cached_drop(conversation_id=conversation_id)
    except Exception:
        logger.exception("history cache drop failed for conversation %s", conversation_id)


def delivery_cursors_rebuild(*, user_ids: list[int]) -> None:
    """Recompute the users' delivery cursors from their messages, after messages were
    written without `message_send` (demo data, imports)."""
    newest: dict[int, int] = dict.fromkeys(user_ids, 0)
    for field in ("sender_id", "recipient_id"):
        rows = Message.objects.filter(**{f"{field}__in": user_ids}).values(field).annotate(newest=Max("id"))
        for row in rows:
            newest[row[field]] = max(newest[row[field]], row["newest"])
    DeliveryCursor.objects.bulk_create(
        [DeliveryCursor(user_id=user_id, last_message_id=last) for user_id, last in newest.items()],
        update_conflicts=True,
        unique_fields=["user"],
        update_fields=["last_message_id"],
    )


def conversation_mark_read(*, user: User, peer_username: str, up_to: object) -> int:
    """Move the user's read marker in their conversation with the peer forward to
    `up_to` (clamped to the newest message). Returns the marker. The peer's sockets
    (and the user's other ones) learn it after commit."""
    if not isinstance(up_to, int) or isinstance(up_to, bool) or up_to < 0:
        raise InvalidInput("`up_to` must be a message id.")
    if not isinstance(peer_username, str) or not peer_username:
        raise InvalidInput("`peer` must be a username.")
    if not text_is_storable(peer_username):
        raise NotFound(f"No conversation with {peer_username!r}.")
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
