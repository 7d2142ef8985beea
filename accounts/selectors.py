"""Reads for accounts."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from django.db import connection
from django.db.models import QuerySet

from accounts.models import User
from chatproject.db import stored_datetime

# What requests and sockets read of their user; the other fields load when first used.
LEAN_USER_COLUMNS = ("id", "username", "is_active", "last_seen", "password")


def user_list(*, viewer: User, search: str = "") -> QuerySet[User]:
    """Everyone the viewer can message: active users other than themselves."""
    users = User.objects.filter(is_active=True).exclude(pk=viewer.pk)
    search = search.strip()
    if "\x00" in search:  # no name has one, and PostgreSQL refuses NUL in a query
        return users.none()
    if search:
        users = users.filter(username__icontains=search)
    return users.order_by("username")


def user_get_active(*, username: str) -> User | None:
    if "\x00" in username:  # no name has one, and PostgreSQL refuses NUL in a query
        return None
    return User.objects.filter(username=username, is_active=True).first()


def user_lean(*, user_id: int) -> User | None:
    """The user with only `LEAN_USER_COLUMNS` loaded, read with a plain cursor: building
    and running `User.objects.get()` cost a quarter of a cached history page's CPU
    (py-spy, `make bench` history phase), three times this."""
    with connection.cursor() as cursor:
        cursor.execute(_lean_user_sql(), [user_id])
        row = cursor.fetchone()
    return None if row is None else user_from_lean_row(row)


def user_from_lean_row(row: Sequence) -> User:
    """A `User` from the values of `LEAN_USER_COLUMNS`, in that order, as a plain cursor
    gives them on PostgreSQL or SQLite."""
    pk, username, is_active, last_seen, password = row
    loaded = {
        "id": pk,
        "username": username,
        "is_active": bool(is_active),
        "last_seen": stored_datetime(last_seen),
        "password": password,
    }
    # from_db takes the values in the model's field order.
    return User.from_db(connection.alias, LEAN_USER_COLUMNS, [loaded[name] for name in _lean_field_order()])


@functools.cache
def _lean_user_sql() -> str:
    columns = ", ".join(connection.ops.quote_name(column) for column in LEAN_USER_COLUMNS)
    return f"SELECT {columns} FROM {User._meta.db_table} WHERE id = %s"  # noqa: S608 - names from the model


@functools.cache
def _lean_field_order() -> list[str]:
    return [f.attname for f in User._meta.concrete_fields if f.attname in LEAN_USER_COLUMNS]
