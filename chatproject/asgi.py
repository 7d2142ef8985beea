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
# collector's collections walked them over and over while connections were made
# (py-spy, `make bench` idle phase): what startup loaded is frozen out of it, and it
# runs after more allocations than the default 700.
gc.freeze()
gc.set_threshold(20_000, 50, 100)

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
