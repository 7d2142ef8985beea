"""ASGI entry point: HTTP goes to Django, WebSockets through the origin check and
authentication to the messaging routes.

    daphne -b 127.0.0.1 -p 8000 chatproject.asgi:application
"""

import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")

# Django must be set up before anything imports models.
django.setup(set_prefix=False)

from chatproject.handlers import OneHopASGIHandler  # noqa: E402

django_asgi_app = OneHopASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from chatproject import autobahn_logging, slow_clients, ws_close  # noqa: E402
from messaging.delivery import BindDeliveryLoop  # noqa: E402
from messaging.routing import websocket_urlpatterns  # noqa: E402
from messaging.ws_auth import OriginCheckMiddleware, WebSocketAuthMiddleware  # noqa: E402

slow_clients.install()
autobahn_logging.install()
ws_close.install()

# Thousands of sockets are thousands of long-lived objects, and the cyclic garbage
# collector's full collections walked them over and over while connections were made
# (py-spy, `make bench` idle phase): what startup loaded is frozen out of it, and a
# full collection waits for 100 middle ones instead of 10.
# The youngest generation stays small: every HTTP request leaves a few hundred objects
# in reference cycles (Django's and DRF's request, view and response point at each
# other), and a collection holds the GIL while it frees them. At 20,000 allocations a
# collection under the history load took 15-18 ms and showed in the history p99;
# at 2,000 a young collection takes 1.6 ms (p50; at most 4.5) and a middle one 5.5,
# for about the same total (`make bench BENCH_ARGS="--systems project --processes 1
# --idle 0 --history-seconds 20"`: history p99 16-17 -> 13.5 ms, chat p99 meanwhile
# 18-21 -> 15-17 ms; idle connect CPU unchanged in full runs).
gc.freeze()
gc.set_threshold(2_000, 10, 100)

websocket_app = WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns))

application = BindDeliveryLoop(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # Browsers (an Origin header) may use their session cookie; other clients
            # authenticate with a token and skip the cookie and session middleware.
            "websocket": OriginCheckMiddleware(SessionMiddlewareStack(websocket_app), without_origin=websocket_app),
        }
    )
)
