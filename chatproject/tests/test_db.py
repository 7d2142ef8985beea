"""The pool's connection check (chatproject.db) against the real PostgreSQL."""

import os

import psycopg
import pytest
from django.db import connection

from chatproject import db

pytestmark = pytest.mark.stack


@pytest.fixture
def conn():
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as connection:
        yield connection


def test_a_connection_checked_within_the_last_second_is_handed_out_without_a_round_trip(conn, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(db.time, "monotonic", lambda: clock[0])
    round_trips = []
    monkeypatch.setattr(db.ConnectionPool, "check_connection", staticmethod(round_trips.append))
    db.check_unless_recent(conn)
    clock[0] += 0.5
    db.check_unless_recent(conn)
    assert round_trips == [conn]
    clock[0] += db.RECENTLY_CHECKED_SECONDS
    db.check_unless_recent(conn)
    assert round_trips == [conn, conn]


def test_a_connection_that_died_while_idle_fails_the_check(conn, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(db.time, "monotonic", lambda: clock[0])
    db.check_unless_recent(conn)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
    clock[0] += db.RECENTLY_CHECKED_SECONDS
    with pytest.raises(psycopg.OperationalError):
        db.check_unless_recent(conn)


@pytest.mark.django_db
def test_the_pool_of_the_default_database_uses_the_check():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        assert cursor.fetchone()[0].startswith("test_")
    assert connection.pool._check is db.check_unless_recent
