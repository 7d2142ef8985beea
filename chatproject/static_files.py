"""WhiteNoise, in Django's async middleware chain.

Under ASGI, Django runs a chain of async-capable middleware on the event loop and
calls the (sync) view with one thread hop. WhiteNoise's middleware is sync only, so in
the middle of the chain it split it: a hop to a thread for the middleware outside it,
back to the loop for those inside it, and to a thread again for the view; four hops
per API call instead of one (py-spy, `make bench` history phase). This subclass does
what WhiteNoise's `__call__` does, without leaving the loop for requests that are not
for a static file.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, **kwargs) -> None:
        super().__init__(get_response, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request):
        if self.autorefresh:  # development: looks at the disk
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        return await self.get_response(request)
