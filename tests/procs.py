"""Real server processes for end-to-end tests: daphne, Celery workers.

They run against the test database that pytest-django created (the test must use
`django_db(transaction=True)` so that the processes see its rows) and the Redis of
`REDIS_URL`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_stack() -> None:
    """Fail (never skip) when the real services are not configured."""
    if not settings.REDIS_URL or connection.vendor != "postgresql":
        raise RuntimeError("this test needs PostgreSQL and Redis: set DATABASE_URL and REDIS_URL")


def test_database_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def process_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "SECRET_KEY": settings.SECRET_KEY,
            "DEBUG": "false",
            "PYTHONUNBUFFERED": "1",
            # The production settings but for a fast password hasher, as in the tests.
            "DJANGO_SETTINGS_MODULE": "chatproject.settings_test",
        }
    )
    env.update(overrides)
    return env


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log_name: str) -> None:
        self.args = args
        self.env = env
        log_dir = ROOT / "test-artifacts" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{log_name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class DaphneServer(Process):
    def __init__(self, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        super().__init__(
            [
                str(BIN / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--websocket-max-message-size",
                str(64 * 1024 + 1024),
                "chatproject.asgi:application",
            ],
            process_env(**env),
            f"daphne-{self.port}",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    def start(self, timeout: float = 30) -> DaphneServer:
        super().start()
        try:
            wait_healthy(self, self.url, time.monotonic() + timeout)
        except RuntimeError:
            self.stop()
            raise
        return self


def wait_healthy(process: Process, url: str, deadline: float) -> None:
    """Wait until `url`/healthz answers 200; raise with the log's tail if the process
    exits or the deadline passes first."""
    name = Path(process.args[0]).name
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.proc.returncode}:\n{process.log_tail()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not become healthy:\n{process.log_tail()}")


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[tuple[Process, ...]]:
    started: list[Process] = []
    try:
        for process in processes:
            started.append(process.start())
        yield processes
    finally:
        for process in reversed(started):
            process.stop()


def _wait_for_log(process: Process, offset: int, needle: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.proc.returncode}:\n{process.log_tail()}")
        with open(process.log_path, "rb") as log:
            log.seek(offset)
            if needle.encode() in log.read():
                return
        time.sleep(0.1)
    process.stop()
    raise RuntimeError(f"{what} did not start:\n{process.log_tail()}")


class CeleryWorker(Process):
    """`celery -A chatproject worker` with the solo pool by default: one process, so a
    SIGKILL of its PID kills every task it holds (a prefork pool's children would
    outlive it). `pool="prefork"` runs one pool child (`children()`), as production
    does: killing that child leaves the parent to deal with its task."""

    def __init__(self, name: str = "worker", pool: str = "solo", **env: str) -> None:
        self.name = f"{name}-{os.getpid()}-{free_port()}"
        super().__init__(
            [
                str(BIN / "celery"),
                "-A",
                "chatproject",
                "worker",
                "-l",
                "INFO",
                "--pool",
                pool,
                "--concurrency",
                "1",
                "-n",
                f"{self.name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            process_env(**env),
            f"celery-{self.name}",
        )

    def start(self, timeout: float = 90) -> CeleryWorker:
        return self.launch().wait_ready(timeout)

    def launch(self) -> CeleryWorker:
        """Start the process without waiting for it (to start several at once)."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start()
        return self

    def wait_ready(self, timeout: float = 90) -> CeleryWorker:
        _wait_for_log(self, self._log_offset, " ready.", timeout, "the Celery worker")
        return self

    def children(self) -> list[int]:
        """PIDs of the worker's child processes (its prefork pool)."""
        return [int(pid) for pid in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]


class BotProcess(Process):
    """`manage.py runbot`: the Telegram bot, long polling the Bot API at
    `TELEGRAM_API_BASE`."""

    def __init__(self, **env: str) -> None:
        super().__init__([sys.executable, "manage.py", "runbot"], process_env(**env), f"runbot-{os.getpid()}")

    def start(self, timeout: float = 90) -> BotProcess:
        return self.launch().wait_ready(timeout)

    def launch(self) -> BotProcess:
        """Start the process without waiting for it (to start several at once)."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start()
        return self

    def wait_ready(self, timeout: float = 90) -> BotProcess:
        _wait_for_log(self, self._log_offset, "Run polling for bot", timeout, "the bot")
        return self


def declare_broker_queues() -> None:
    """Declare Celery's queues on the Redis broker again. Flushing the Redis database
    (the root conftest does before each test) drops kombu's binding keys, after which
    publishing a task fails with "Cannot route message"."""
    from chatproject.celery import app

    with app.connection_for_write() as connection:
        for queue in app.amqp.queues.values():
            queue.bind(connection.default_channel).declare()
