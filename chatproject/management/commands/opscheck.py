"""`manage.py opscheck`: can this deployment reach everything it needs?

Checks the database (and that no migration is pending), Redis, a channel layer
round-trip (a message sent to a fresh channel comes back), the Celery broker and,
with `--workers`, that at least one Celery worker answers a ping. Prints one line per
check (or JSON with `--json`) and exits non-zero when any fails, so it serves as well
in a terminal as in a container health check or a deploy script.

Each check is bounded by `--timeout`: an unreachable host fails the check instead of
hanging the command.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    ms: int


class CheckTimedOut(Exception):
    pass


def _bounded(fn: Callable[[], str], timeout: float) -> str:
    """Run `fn` in a daemon thread and give up after `timeout` seconds.

    A thread, not a signal, because database and Redis clients block in C calls;
    a daemon one, so that a check stuck on a dead host does not keep the process alive.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["detail"] = fn()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            # The thread's own database connection, if it opened one.
            connection.close()

    thread = threading.Thread(target=target, name="opscheck", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise CheckTimedOut(f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return str(outcome["detail"])


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        if cursor.fetchone() != (1,):
            raise RuntimeError("SELECT 1 did not return 1")
    return connection.vendor


def check_migrations() -> str:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _backwards in plan[:5])
        more = f" and {len(plan) - 5} more" if len(plan) > 5 else ""
        raise RuntimeError(f"{len(plan)} unapplied: {names}{more} (run `manage.py migrate`)")
    return "all applied"


def check_redis() -> str:
    if not settings.REDIS_URL:
        return "not configured (embedded mode: local-memory cache)"
    from django_redis import get_redis_connection

    if not get_redis_connection("default").ping():
        raise RuntimeError("PING was not answered")
    return "PONG"


async def _channel_layer_round_trip(timeout: float) -> str:
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    # A private instance: its connections are ours to close, whatever the rest of the
    # process does with the shared one.
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    try:
        channel = await layer.new_channel()
        nonce = uuid.uuid4().hex
        await layer.send(channel, {"type": "opscheck.ping", "nonce": nonce})
        message = await asyncio.wait_for(layer.receive(channel), timeout)
        if message.get("nonce") != nonce:
            raise RuntimeError(f"received a different message: {message!r}")
        return f"{type(layer).__name__}: sent and received on a fresh channel"
    finally:
        await _close_layer(layer)


async def _close_layer(layer: object) -> None:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    # Flushing a pub/sub layer only drops this instance's subscriptions and connections;
    # other layers' flush deletes shared data, so those are only closed.
    if isinstance(layer, RedisPubSubChannelLayer):
        await layer.flush()
    elif hasattr(layer, "close_pools"):
        await layer.close_pools()


def check_channel_layer(timeout: float) -> str:
    return asyncio.run(_channel_layer_round_trip(timeout))


def check_celery_broker(timeout: float) -> str:
    from chatproject.celery import app

    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "not used (embedded mode: tasks run in the calling process)"
    from kombu.utils.url import maybe_sanitize_url

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=timeout)
    # The password, if any, masked.
    return maybe_sanitize_url(app.conf.broker_url)


def check_celery_workers(timeout: float) -> str:
    from chatproject.celery import app

    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "not used (embedded mode: tasks run in the calling process)"
    # A broadcast can go unheard by a worker that has only just started: ask again
    # until one answers or the time is up.
    deadline = time.monotonic() + timeout
    names: list[str] = []
    while not names and time.monotonic() < deadline:
        replies = app.control.ping(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        names = sorted(name for reply in replies for name in reply)
    if not names:
        raise RuntimeError(f"no worker answered a ping within {timeout:g} s")
    return f"{len(names)} answered: {', '.join(names)}"


class Command(BaseCommand):
    help = (
        "Check the database, migrations, Redis, the channel layer, the Celery broker "
        "(and workers with --workers); exit 1 when something fails."
    )
    # It only reads; the system checks are `manage.py check`'s business.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--workers", action="store_true", help="also require at least one Celery worker to answer a ping"
        )
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds allowed for each check (default 5)")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print one JSON object instead of a table"
        )

    def handle(self, *args, workers: bool, timeout: float, as_json: bool, **options) -> None:
        checks: list[tuple[str, Callable[[], str]]] = [
            ("database", check_database),
            ("migrations", check_migrations),
            ("redis", check_redis),
            ("channel layer", lambda: check_channel_layer(timeout)),
            ("celery broker", lambda: check_celery_broker(timeout)),
        ]
        if workers:
            checks.append(("celery workers", lambda: check_celery_workers(timeout)))

        results = []
        for name, check in checks:
            if name == "migrations" and not results[0].ok:
                results.append(CheckResult(name, False, "not checked: the database is unreachable", 0))
                continue
            results.append(self._run(name, check, timeout))

        if as_json:
            self.stdout.write(_json_report(results))
        else:
            width = max(len(result.name) for result in results)
            for result in results:
                status = self.style.SUCCESS("ok  ") if result.ok else self.style.ERROR("FAIL")
                self.stdout.write(f"{result.name:<{width}}  {status}  {result.detail} ({result.ms} ms)")

        failed = [result.name for result in results if not result.ok]
        if failed:
            raise CommandError(f"unhealthy: {', '.join(failed)}")

    def _run(self, name: str, check: Callable[[], str], timeout: float) -> CheckResult:
        started = time.monotonic()
        try:
            # The channel layer waits `timeout` for its message itself; the margin lets
            # it report that rather than a bare time-out.
            detail, ok = _bounded(check, timeout + 1), True
        except Exception as exc:
            detail, ok = _describe(exc), False
        return CheckResult(name, ok, detail, round((time.monotonic() - started) * 1000))


def _describe(exc: Exception) -> str:
    # Our own failures are sentences already; a library's exception needs its name.
    if type(exc) is RuntimeError:
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _json_report(results: list[CheckResult]) -> str:
    return json.dumps(
        {"ok": all(result.ok for result in results), "checks": [asdict(result) for result in results]},
        separators=(",", ":"),
    )
