"""The operations commands: `opscheck`, and the stock `flushexpiredtokens` and
`clearsessions` that docs/operations.md tells operators to schedule."""

import json
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.sessions.backends.cached_db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from tests.procs import BIN, ROOT, Process, process_env, require_stack

CHECKS = ["database", "migrations", "redis", "channel layer", "celery broker"]


def _opscheck(*args: str) -> dict:
    out = StringIO()
    call_command("opscheck", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def _opscheck_in_subprocess(**env: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": "/usr/bin:/bin",
        "SECRET_KEY": "x" * 50,
        "DJANGO_SETTINGS_MODULE": "chatproject.settings",
        **env,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "opscheck", "--timeout", "3"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db
def test_opscheck_passes_when_every_service_answers():
    report = _opscheck()

    assert report["ok"] is True
    assert [check["name"] for check in report["checks"]] == CHECKS
    assert all(check["ok"] for check in report["checks"]), report


@pytest.mark.django_db
def test_opscheck_prints_one_line_per_check():
    out = StringIO()
    call_command("opscheck", stdout=out)

    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == CHECKS
    assert all(" ok " in line for line in lines)


def test_opscheck_fails_and_names_every_unreachable_service():
    # Port 1 on the loopback: nothing listens there, so each connection is refused.
    result = _opscheck_in_subprocess(
        DATABASE_URL="postgres://root@127.0.0.1:1/nothing", REDIS_URL="redis://127.0.0.1:1/0"
    )

    assert result.returncode == 1
    status = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    for name in CHECKS:
        assert "FAIL" in status[name], result.stdout
    assert "unhealthy: database, migrations, redis, channel layer, celery broker" in result.stderr


def test_opscheck_fails_while_migrations_are_pending(tmp_path):
    result = _opscheck_in_subprocess(DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.sqlite3'}")

    assert result.returncode == 1
    status = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    assert " ok " in status["database"]
    assert "FAIL" in status["migrations"]
    assert "unapplied" in status["migrations"]
    assert "run `manage.py migrate`" in status["migrations"]
    assert "unhealthy: migrations" in result.stderr


@pytest.mark.stack
@pytest.mark.e2e
@pytest.mark.django_db
def test_opscheck_reaches_postgres_redis_and_a_real_celery_worker():
    require_stack()

    before = _opscheck()
    assert before["ok"] is True, before
    details = {check["name"]: check["detail"] for check in before["checks"]}
    assert details["database"] == "postgresql"
    assert details["redis"] == "PONG"
    assert details["channel layer"].startswith("ChatChannelLayer")
    assert details["celery broker"].startswith("redis://")

    with pytest.raises(CommandError, match="unhealthy: celery workers"):
        _opscheck("--workers", "--timeout", "2")

    worker = Process(
        [str(BIN / "celery"), "-A", "chatproject", "worker", "-l", "INFO", "--concurrency", "1", "-n", "opscheck@%h"],
        process_env(),
        "celery-opscheck",
    ).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                report = _opscheck("--workers", "--timeout", "3")
                break
            except CommandError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the worker never answered:\n{worker.log_tail()}") from None
    finally:
        worker.stop()

    workers = next(check for check in report["checks"] if check["name"] == "celery workers")
    assert workers["ok"] is True
    assert "opscheck@" in workers["detail"]


@pytest.mark.django_db
def test_flushexpiredtokens_deletes_only_expired_refresh_tokens(alice):
    now = timezone.now()
    expired = OutstandingToken.objects.create(user=alice, jti="expired", token="t1", expires_at=now - timedelta(days=1))
    BlacklistedToken.objects.create(token=expired)
    valid = OutstandingToken.objects.create(user=alice, jti="valid", token="t2", expires_at=now + timedelta(days=1))

    call_command("flushexpiredtokens")

    assert list(OutstandingToken.objects.all()) == [valid]
    assert not BlacklistedToken.objects.exists()


@pytest.mark.django_db
def test_clearsessions_deletes_only_expired_sessions():
    live = SessionStore()
    live["user"] = "alice"
    live.create()
    stale = SessionStore()
    stale.create()
    Session.objects.filter(session_key=stale.session_key).update(expire_date=timezone.now() - timedelta(seconds=1))

    call_command("clearsessions")

    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]
