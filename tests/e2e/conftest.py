"""Fixtures of the browser suite: one real daphne and one headless Chromium per module,
because starting them is what costs the time; the scenarios then share them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ROOT, DaphneServer, require_stack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ALLOW_ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


@pytest.fixture(scope="module")
def live_server_process(django_db_setup, django_db_blocker) -> Iterator[DaphneServer]:
    """daphne on the test database. Module-scoped: tests that use it must be
    `django_db(transaction=True)`, so that their rows are committed and visible to it."""
    require_stack()
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


# The scenario seeds a long history over REST; the per-user send rate is not what it tests.
SERVER_ENV = {"CHAT_RATE_LIMIT": "1000/10"}


def start_server(port: int | None = None) -> DaphneServer:
    server = DaphneServer(port=port, **SERVER_ENV)
    # The server must keep Django's guard against ORM calls in async code (see below).
    server.env.pop(ALLOW_ASYNC_UNSAFE, None)
    # Generous: a fresh process answers its first request only once the URLconf has
    # imported everything (aiogram alone takes 15 s and more on a busy 2-core machine).
    return server.start(timeout=120)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `make browser`")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in the test thread, and Django
    # then refuses ORM calls there (the test database's flush after the test included),
    # although nothing runs concurrently with them. For this test process only.
    previous = os.environ.get(ALLOW_ASYNC_UNSAFE)
    os.environ[ALLOW_ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop(ALLOW_ASYNC_UNSAFE, None)
        else:
            os.environ[ALLOW_ASYNC_UNSAFE] = previous


def save_screenshot(page, name: str, *, docs_copy: str | None = None) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    if docs_copy:
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / docs_copy)
    return path
