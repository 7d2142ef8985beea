"""Django's ASGI handler, with the middleware chain and the view run in one thread hop.

Django's ASGI handler runs the middleware chain on the event loop. Every
`MiddlewareMixin` middleware (Django's own, CSP's) is async-capable only in name: it
calls its `process_request` and `process_response` with a thread hop each, so with
the project's eight of them an API call went to a thread and back about a dozen times
around its sync view (py-spy, `make bench` history phase). Every view here is
sync, so this handler builds the sync chain, as under WSGI, and runs it, view
included, with one hop. Reading the request body and sending the response stay on
the event loop, so a slow client holds no thread.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class OneHopASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        # thread_sensitive: the thread of this request's ThreadSensitiveContext, where
        # Django also sends request_started and request_finished (database
        # connections are per thread).
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
