"""Which renderer answers an API request (DRF's DEFAULT_CONTENT_NEGOTIATION_CLASS); a module of its own since
DRF's APIView reads the setting when it is defined."""

from collections.abc import Iterable

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class JsonAnswers(DefaultContentNegotiation):
    """The API answers JSON (a stream: server-sent events) whatever `Accept` says, as OpenAI's and Stripe's do:
    DRF's default refuses with a 406 a client that names only other types, and curl, browsers' EventSource and
    some SDKs send `Accept: text/event-stream` to the endpoints that stream. With one renderer (every view but
    the schema's) there is nothing to choose, so the header is not even parsed."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        offered = list(renderers)
        if len(offered) == 1:
            return offered[0], offered[0].media_type
        try:
            return super().select_renderer(request, offered, format_suffix)
        except NotAcceptable:
            return offered[0], offered[0].media_type
