"""One ASGI application for daphne: Django for HTTP, Channels for websockets (session-authenticated)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.local")
# Django must be set up before anything imports models (the consumers do).
django.setup(set_prefix=False)

from saas.core.asgi import OneHopASGIHandler  # noqa: E402
from saas.core.client_ip import ClientAddressMiddleware  # noqa: E402
from saas.core.http_limits import BodyLimitMiddleware  # noqa: E402
from saas.llm.asgi import GatewayRoute  # noqa: E402

# Body limits are enforced by our daphne entry point (saas.core.http_server) before the body is read; the
# middleware enforces them under any other ASGI server.
# The gateway's hot endpoints (POST /v1/chat/completions, /v1/embeddings) run on the event loop (saas/llm/asgi.py).
django_asgi_app = BodyLimitMiddleware(GatewayRoute(OneHopASGIHandler()))

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from saas.core.consumers import SessionCookieMiddleware  # noqa: E402
from saas.routing import websocket_urlpatterns  # noqa: E402

# Behind trusted proxies (TRUSTED_PROXIES) the scope's client is the client's address, not the proxy's: REMOTE_ADDR
# and the websocket consumers see what saas.core.client_ip.client_ip() sees.
application = ClientAddressMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # The session key only: the consumers check the session, the user and their rights themselves,
            # off the event loop (saas/core/consumers.py).
            "websocket": AllowedHostsOriginValidator(SessionCookieMiddleware(URLRouter(websocket_urlpatterns))),
        }
    )
)
