"""The benchmark's own database and environment, set up before Django is.

The database named by DATABASE_URL is never written to: the benchmark creates a fresh
`bench_<name>` next to it (dropping a previous one), migrates it and fills it with
users made in bulk with one precomputed password hash.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

RELAY_TABLE = "bench_relay_message"


@dataclass
class Stack:
    database_url: str
    database_name: str
    redis_url: str


def bench_database_url(base_url: str, name: str | None) -> tuple[str, str]:
    parts = urlsplit(base_url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"The benchmark needs PostgreSQL: DATABASE_URL is {parts.scheme or 'unset'}")
    name = name or f"bench_{parts.path.lstrip('/') or 'db'}"
    return urlunsplit(parts._replace(path=f"/{name}")), name


def recreate_database(base_url: str, name: str) -> None:
    # Connect to the maintenance database: the target may not exist yet.
    with psycopg.connect(base_url, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(base_url: str, name: str) -> None:
    with psycopg.connect(base_url, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def prepare(database_name: str | None, chat_rate_limit: str) -> Stack:
    """Create the database and set the environment that this process (for minting
    tokens and checking rows) and the servers it starts share."""
    base_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:
        raise SystemExit("The benchmark needs Redis: set REDIS_URL (e.g. redis://127.0.0.1:6379/14)")
    url, name = bench_database_url(base_url, database_name)
    recreate_database(base_url, name)
    os.environ.update(
        {
            "DATABASE_URL": url,
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            # The default (30 per 10 s) would refuse most of the burst.
            "CHAT_RATE_LIMIT": chat_rate_limit,
        }
    )
    return Stack(url, name, redis_url)


def migrate_and_create_table() -> None:
    from django.core.management import call_command

    from bench.ws_relay import create_table_sql

    call_command("migrate", interactive=False, verbosity=0)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(create_table_sql(RELAY_TABLE))


def analyze() -> None:
    """Statistics for the tables just filled, as autovacuum would gather within a
    minute on a live database; without them PostgreSQL plans for empty tables (scans
    that grow with every message) until autovacuum happens to run mid-phase."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("ANALYZE")


def create_users(prefix: str, count: int) -> list[tuple[int, str]]:
    """(id, username) of `count` new users, in order."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    user_model = get_user_model()
    password = make_password("bench-password-not-a-secret")
    names = [f"{prefix}{i:05d}" for i in range(count)]
    user_model.objects.bulk_create([user_model(username=n, password=password) for n in names], batch_size=2000)
    ids = dict(user_model.objects.filter(username__in=names).values_list("username", "pk"))
    return [(ids[n], n) for n in names]


def mint_tokens(user_ids: list[int]) -> list[str]:
    """Access tokens straight from simplejwt, as the login endpoint would issue them
    (it is throttled, and hashing passwords is not what is measured)."""
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import AccessToken

    # The password hash too: tokens carry a hash of it (CHECK_REVOKE_TOKEN).
    users = get_user_model().objects.only("pk", "password").in_bulk(user_ids)
    return [str(AccessToken.for_user(users[pk])) for pk in user_ids]


def stored_client_ids(system: str, run_tag: str) -> dict[str, list[int]]:
    """client_id -> ids of the rows the system stored during one run."""
    from django.db import connection

    if system == "project":
        query = "SELECT client_id, id FROM messaging_message WHERE client_id LIKE %s"
    else:
        query = f"SELECT client_id, id FROM {RELAY_TABLE} WHERE client_id LIKE %s"
    rows: dict[str, list[int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(query, [f"{run_tag}.%"])
        for client_id, pk in cursor.fetchall():
            rows.setdefault(client_id, []).append(pk)
    return rows
