"""Work that belongs to a request but need not delay its answer (a ledger row, cache entries)."""

import logging
from collections.abc import Callable

from django.http.response import HttpResponseBase

logger = logging.getLogger(__name__)


def after_send(response: HttpResponseBase, work: Callable[[], None], *, what: str) -> HttpResponseBase:
    """Run `work` in the request's thread once the response has been sent.

    Django closes every response after sending it (under ASGI, WSGI and in the test client) and runs the
    response's closers first; saas.core.asgi also closes it when the client hung up before the answer was
    ready. A failure is logged (and so reported to Sentry): the client has its answer already.
    """

    def guarded() -> None:
        try:
            work()
        except Exception:
            logger.exception("Could not record %s after sending the response", what)

    response._resource_closers.append(guarded)  # type: ignore[attr-defined]  # Django's own hook for closers
    return response
