"""A fake Telegram Bot API server for tests: real HTTP (aiohttp) on 127.0.0.1, in a
background thread, at the URLs aiogram builds (`{base}/bot{token}/{method}`).

It implements what the messenger uses: getMe, deleteWebhook, getUpdates (long
polling over updates the test injects with `push_message()`, honouring `offset` and
`timeout`) and sendMessage (recorded in `sent`; `fail_next()` makes the next calls
answer 429 with a retry_after, 403 (blocked), 400 (chat not found), 401 or 500
instead, recorded in `refused`). `hold_next_send()` makes the next sendMessage hang
unprocessed, as a slow Telegram would, until `release()` (then it is processed) or
until its client goes away (then it never is: recorded in `dropped`), to kill a worker
while its call is in flight.

    with FakeTelegram() as fake:
        ... TELEGRAM_API_BASE=fake.base_url ...
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

BOT_USERNAME = "test_notify_bot"
BOT_ID = 4242


@dataclass
class SentMessage:
    chat_id: int
    text: str
    at: float = field(default_factory=time.monotonic)
    # `parse_mode` as the client sent it ("HTML", "MarkdownV2", or None: plain text).
    parse_mode: str | None = None


@dataclass
class Refusal:
    status: int
    chat_id: int
    at: float = field(default_factory=time.monotonic)


class FakeTelegram:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._updates: list[dict] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._failures: dict[str, list[tuple[int, int]]] = {}  # method: [(status, retry_after)]
        self.sent: list[SentMessage] = []
        self.refused: list[Refusal] = []
        self.calls: list[str] = []
        # sendMessage calls to hold: how many more, which chats are held right now, the
        # chats of held calls whose client went away, and a count of `release()` calls.
        self._holds = 0
        self.holding: list[int] = []
        self.dropped: list[int] = []
        self._releases = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    # --- what tests use ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push_message(self, *, chat_id: int, text: str, chat_type: str = "private") -> int:
        """Queue an incoming message from a user (chat id = user id), as getUpdates
        would deliver it. Returns its update_id."""
        with self._lock:
            update_id = next(self._update_ids)
            message: dict = {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": chat_type, "first_name": "Tester"},
                "from": {"id": chat_id, "is_bot": False, "first_name": "Tester"},
                "text": text,
            }
            if text.startswith("/"):
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
            self._updates.append({"update_id": update_id, "message": message})
        return update_id

    def fail_next(self, status: int, *, times: int = 1, retry_after: int = 1, method: str = "sendMessage") -> None:
        """Answer the next `times` calls of `method` with `status` (429, 403, 500...)."""
        with self._lock:
            self._failures.setdefault(method, []).extend([(status, retry_after)] * times)

    def hold_next_send(self, times: int = 1) -> None:
        """Hold the next `times` sendMessage calls without processing them: each hangs
        until `release()`, or until its client goes away (a killed worker, a timeout),
        when it is dropped unprocessed (`dropped`). `holding` lists the chats held now."""
        with self._lock:
            self._holds += times

    def release(self) -> None:
        """Process the sendMessage calls held now (those whose client still waits)."""
        with self._lock:
            self._releases += 1

    def messages_to(self, chat_id: int) -> list[SentMessage]:
        with self._lock:
            return [m for m in self.sent if m.chat_id == chat_id]

    def refusals_to(self, chat_id: int) -> list[Refusal]:
        with self._lock:
            return [r for r in self.refused if r.chat_id == chat_id]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; sent={self.sent!r}")

    def reset(self) -> None:
        with self._lock:
            self._updates.clear()
            self._failures.clear()
            self.sent.clear()
            self.refused.clear()
            self.calls.clear()
            self._holds = 0
            self.dropped.clear()
            # Calls still held end as their clients go away (or with the server).

    # --- the server ---------------------------------------------------------------

    def start(self) -> FakeTelegram:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_site())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-telegram", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Telegram server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._closing = True  # ends the long polls in flight
        time.sleep(0.2)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._dispatch)
        app.router.add_get("/bot{token}/{method}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _dispatch(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = dict(await request.post())
        params.update(request.query)
        with self._lock:
            self.calls.append(method)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        if method != "sendMessage":  # sendMessage records its refusals itself
            with self._lock:
                failures = self._failures.get(method)
                failure = failures.pop(0) if failures else None
            if failure:
                return _failure(*failure)
        if method == "sendMessage":
            return await handler(params, request)
        return await handler(params)

    async def _api_getMe(self, params: dict) -> web.Response:
        return _ok({"id": BOT_ID, "is_bot": True, "first_name": "Notify", "username": BOT_USERNAME})

    async def _api_deleteWebhook(self, params: dict) -> web.Response:
        return _ok(True)

    async def _api_getUpdates(self, params: dict) -> web.Response:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                # Like Telegram: asking from `offset` confirms every update before it.
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
                pending = list(self._updates[:100])
            if pending or self._closing or time.monotonic() >= deadline:
                return _ok(pending)
            await asyncio.sleep(0.05)

    async def _held(self, request: web.Request, chat_id: int) -> bool:
        """Hold this sendMessage if a hold is set. True: go on with it (not held, or
        released); False: its client went away (or the server is stopping) first."""
        with self._lock:
            if not self._holds:
                return True
            self._holds -= 1
            releases = self._releases
            self.holding.append(chat_id)
        try:
            while True:
                with self._lock:
                    if self._releases != releases:
                        return True
                # aiohttp does not cancel a handler whose client disconnects; its
                # transport goes away instead.
                if self._closing or request.transport is None or request.transport.is_closing():
                    with self._lock:
                        self.dropped.append(chat_id)
                    return False
                await asyncio.sleep(0.02)
        finally:
            with self._lock:
                self.holding.remove(chat_id)

    async def _api_sendMessage(self, params: dict, request: web.Request) -> web.Response:
        chat_id = int(params["chat_id"])
        if not await self._held(request, chat_id):
            return _error(500, "Internal Server Error: the client went away")
        with self._lock:
            failures = self._failures.get("sendMessage")
            failure = failures.pop(0) if failures else None
            if failure:
                self.refused.append(Refusal(status=failure[0], chat_id=chat_id))
            else:
                self.sent.append(SentMessage(chat_id=chat_id, text=params["text"], parse_mode=params.get("parse_mode")))
                message_id = next(self._message_ids)
        if failure:
            return _failure(*failure)
        return _ok(
            {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "text": params["text"],
            }
        )


def _failure(status: int, retry_after: int) -> web.Response:
    if status == 429:
        return _error(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})
    if status == 403:
        return _error(403, "Forbidden: bot was blocked by the user")
    if status == 400:
        return _error(400, "Bad Request: chat not found")
    if status == 401:
        return _error(401, "Unauthorized")
    return _error(status, "Internal Server Error")


def _ok(result: object) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, parameters: dict | None = None) -> web.Response:
    body: dict = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")
