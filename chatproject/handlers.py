"""Django's ASGI handler, with each request's sync work done in one hop to a thread of
a fixed pool.

Django's ASGI handler, for every request:
- starts a thread of its own (a `ThreadSensitiveContext` is a new one-thread
  executor per request) and joins it at the end;
- runs the middleware chain on the event loop, and every `MiddlewareMixin` middleware
  (Django's own, CSP's) is async-capable only in name: a thread hop for each
  `process_request` and `process_response`;
- hops to that thread for `request_started`, again for the view, and again for
  `response.close()` (`request_finished`).

With every view here sync, that was a dozen hops and a thread start per API call,
most of a cached history page's CPU (py-spy, `make bench` history phase). This handler
builds the sync chain, as under WSGI, and runs `request_started`, the chain with the
view, and (for a response that is not streamed) `response.close()` in one hop to a
thread of a fixed pool, as a WSGI server's threads would. Reading the request body and
sending the response stay on the event loop, so a slow client holds no thread; a
streamed response (a static file) is read and then closed as Django's handler does,
in a thread of the request's own, made only for it.

Database connections are per thread as under WSGI: taken from the pool for a request
and given back by `request_finished`, before the response goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.urls import set_script_prefix

# Requests whose sync part runs at once; more wait for a thread. Below the database
# pool's default size (DATABASE_POOL_SIZE), which the message store's thread and the
# presence heartbeats also draw from.
HTTP_THREADS = 12


class OneHopASGIHandler(ASGIHandler):
    executor = ThreadPoolExecutor(max_workers=HTTP_THREADS, thread_name_prefix="http")

    def __init__(self) -> None:
        super().__init__()
        # Made once: building a SyncToAsync per call was a tenth of the handler's CPU.
        self._respond_in_thread = self._in_thread(self._respond)
        self._start_and_close_in_thread = self._in_thread(self._start_and_close)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # As Django's handler: thread-sensitive work of this request (reading a streamed
        # response's sync iterator, closing it) gets a thread of its own, made only if
        # there is any, instead of the one thread Channels' database calls share.
        async with ThreadSensitiveContext():
            await self.handle(scope, receive, send)

    def _in_thread(self, func):
        return sync_to_async(func, thread_sensitive=False, executor=self.executor)

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self._start_and_close_in_thread(scope, error_response)
            await self.send_response(error_response, send)
            return

        # Shielded: a sync view runs to its end even if the client goes away, and its
        # response must still be closed.
        responding = asyncio.ensure_future(self._respond_in_thread(scope, request))

        async def process_request():
            response = await asyncio.shield(responding)
            with contextlib.suppress(asyncio.CancelledError):  # the client went away during the send
                await self.send_response(response, send)

        # As Django's handler: a disconnect stops the sending.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            # Shielded too: a cancelled application (daphne's close timeout) must not
            # cancel the view's thread's waits and lose its response's close().
            response = await asyncio.shield(responding)
            if response.streaming:
                await sync_to_async(response.close)()  # the thread that read it
        finally:
            body_file.close()

    def _respond(self, scope, request):
        signals.request_started.send(sender=self.__class__, scope=scope)
        response = self.get_response(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        if not response.streaming:
            # Its content is in memory: request_finished now, so that the database
            # connection is back in the pool before the response is sent.
            response.close()
        return response

    def _start_and_close(self, scope, response) -> None:
        signals.request_started.send(sender=self.__class__, scope=scope)
        response.close()
