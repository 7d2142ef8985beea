"""Database helpers: the PostgreSQL connection pool's check, and values read with a
plain cursor."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from psycopg_pool import ConnectionPool

# A connection handed out less than this long ago is handed out again unchecked.
RECENTLY_CHECKED_SECONDS = 1.0


def check_unless_recent(conn) -> None:
    """The pool's `check`: psycopg's round trip (`ConnectionPool.check_connection`),
    but only for a connection not handed out in the last second. Under load each
    connection goes in and out of the pool for every request and every database hop
    of a socket, and the round trip was as costly as the query it guarded. A
    connection that dies with a PostgreSQL restart within that second fails its one
    request with a database error (as a request does while PostgreSQL is down) and
    the pool replaces it; one that sat idle is checked as before."""
    now = time.monotonic()
    if now - getattr(conn, "_chat_checked_at", -RECENTLY_CHECKED_SECONDS) >= RECENTLY_CHECKED_SECONDS:
        ConnectionPool.check_connection(conn)
    conn._chat_checked_at = now


def use_recent_check(sender, connection, **kwargs) -> None:
    """`connection_created` receiver: give the connection's pool
    `check_unless_recent`. Django makes the pool, lazily, with psycopg's check
    (CONN_HEALTH_CHECKS) and has no setting for another, so the pool's attribute is
    replaced once the pool exists (chatproject.tests.test_db pins it)."""
    pool = connection.pool if connection.vendor == "postgresql" else None
    if pool is not None and pool._check is not check_unless_recent:
        pool._check = check_unless_recent


def stored_datetime(value: datetime | str | None) -> datetime | None:
    """A datetime column read with a plain cursor, as Django's converters would make
    it: PostgreSQL gives it aware; SQLite naive (or as text), in UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
