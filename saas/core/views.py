import hmac
import logging
import os
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django_prometheus.exports import ExportToDjangoView
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from saas.core import worker_metrics
from saas.core.errors import error_body, error_response
from saas.core.health import readiness

logger = logging.getLogger(__name__)


@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches no database, cache or broker."""
    return JsonResponse({"status": "ok"})


@require_safe
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    components = readiness()
    failing = [name for name, status in components.items() if status.required and not status.ok]
    body: dict[str, Any] = {
        "status": "ok" if not failing else "unavailable",
        "components": {name: status.as_json() for name, status in components.items()},
    }
    if not failing:
        return JsonResponse(body)
    body["failing"] = failing
    body.update(error_body("not_ready", f"Not ready: {', '.join(failing)}", {"failing": failing}))
    logger.warning("readyz: not ready: %s", ", ".join(failing))
    response = JsonResponse(body, status=503)
    # Probes poll: a down dependency is one warning per probe, not an error report (and Sentry event) each.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


@require_safe
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics: behind METRICS_TOKEN when one is set; else open only with METRICS_PUBLIC (the default
    locally, not in production), otherwise not there at all."""
    token = settings.METRICS_TOKEN
    if not token and not settings.METRICS_PUBLIC:
        return error_response("not_found", "Not found.", 404)
    if token:
        supplied = request.headers.get("Authorization", "")
        if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
            response = error_response("not_authenticated", "A valid metrics bearer token is required.", 401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # one of several web processes: the counts of all of them
        registry = worker_metrics.exporter_registry()
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    return ExportToDjangoView(request)
