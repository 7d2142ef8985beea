"""Group commit for the sends of one server process.

Every socket's `send` waits for its own message to be committed before it is
acknowledged. Rather than one transaction per message, the sends that arrive while a
transaction is in progress are stored together in the next one
(`message_send_many`): at low load a send is stored at once, alone; under load the
batches grow and the database does one commit for many messages. Order is kept: sends
are stored in the order they were queued, and batches are committed, published and
answered one after the other.

The batches are stored on a thread of their own, with its own database connection,
not on the one thread that Channels and Django share for everything synchronous
(`database_sync_to_async`, sync views): a history page or a presence update does not
wait behind a batch, nor a batch behind them. The connection stays open between
batches; after an error it is checked (and dropped if broken, so that the next batch
reconnects), like Django does between requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.db import InterfaceError, OperationalError, connections

from messaging import delivery
from messaging.services import SendRequest, SendResult, message_send_many

logger = logging.getLogger(__name__)

MAX_BATCH = 256
# After the database was found unreachable, sends fail at once for this long before
# the next attempt.
UNREACHABLE_BACKOFF_SECONDS = 2.0

_store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="message-store")


def _store_batch(requests: list[SendRequest]) -> list:
    try:
        return message_send_many(requests=requests)
    except Exception:
        for connection in connections.all(initialized_only=True):
            connection.close_if_unusable_or_obsolete()
        raise


class SendBatcher:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiting: list[tuple[SendRequest, asyncio.Future]] = []
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.unreachable_until = 0.0

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.waiting, self.wakeup = loop, [], asyncio.Event()
        self.task = loop.create_task(self._run())

    def enqueue(self, request: SendRequest) -> asyncio.Future:
        """Queue the send for storing; the future has its `SendResult`, or the error
        `message_send` would raise for it, once it is stored and published. Sends are
        stored in the order they were queued."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop or self.task is None or self.task.done():
            self._start(loop)
        future: asyncio.Future = loop.create_future()
        self.waiting.append((request, future))
        self.wakeup.set()
        return future

    async def submit(self, request: SendRequest) -> SendResult:
        """Store the send; raises what `message_send` would raise for it."""
        return await self.enqueue(request)

    async def _run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.waiting:
                batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
                outcomes = await self._store([r for r, _ in batch])
                # Acknowledge only what has been published (see delivery.flush), but
                # store the next batch meanwhile: the publishing is on the event loop,
                # the storing on its thread and in PostgreSQL. Batches are published,
                # and so answered, in the order they were stored.
                published = delivery.published()
                if published is None:
                    self._answer(batch, outcomes)
                else:
                    published.add_done_callback(functools.partial(self._answer, batch, outcomes))

    @staticmethod
    def _answer(
        batch: list[tuple[SendRequest, asyncio.Future]], outcomes: list, published: asyncio.Future | None = None
    ) -> None:
        if published is not None and published.exception() is not None:
            # Stored but perhaps not published: no ack; a retry gets the stored message.
            outcomes = [published.exception()] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the socket went away meanwhile
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _store(self, requests: list[SendRequest]) -> list:
        if time.monotonic() < self.unreachable_until:
            return [OperationalError("the database is unreachable; try again shortly")] * len(requests)
        try:
            return await asyncio.get_running_loop().run_in_executor(_store_thread, _store_batch, requests)
        except Exception as exc:
            if isinstance(exc, (OperationalError, InterfaceError)):
                # The database is unreachable: every sender hears of it (no ack), and
                # for a moment the next ones at once, rather than each waiting for a
                # connection in turn (a socket's frames are answered in order).
                self.unreachable_until = time.monotonic() + UNREACHABLE_BACKOFF_SECONDS
            if len(requests) == 1 or isinstance(exc, (OperationalError, InterfaceError)):
                logger.exception("storing %d message(s) failed", len(requests))
                return [exc] * len(requests)
        # One bad request must not fail the others: store them one by one.
        logger.warning("storing a batch of %d messages failed; storing them one by one", len(requests))
        outcomes = []
        for request in requests:
            outcomes.extend(await self._store([request]))
        return outcomes


send_batcher = SendBatcher()
