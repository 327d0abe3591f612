"""Production: every secret comes from the environment, and a missing one stops the boot with one line."""

import sys

from saas.settings import logging as logging_settings
from saas.settings.base import *  # noqa: F403
from saas.settings.base import BASE_DIR, env


def _require(name: str, why: str) -> str:
    value = env.str(name, default="")
    if not value:
        # SystemExit prints just this line (no traceback) from manage.py, daphne and celery alike.
        sys.exit(f"Crewdesk refuses to start: {name} is not set ({why}).")
    return value


DEBUG = False
SECRET_KEY = _require("SECRET_KEY", "it signs sessions, CSRF tokens and password-reset links")
if len(SECRET_KEY) < 50:
    sys.exit("Crewdesk refuses to start: SECRET_KEY must be at least 50 random characters.")
_require("DATABASE_URL", "production never falls back to a local database")
_require("REDIS_URL", "production never falls back to a local Redis")
_require("LLM_ENCRYPTION_KEYS", "prompts and answers are encrypted at rest with these Fernet keys")

# TLS terminates at the load balancer, which sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Probes and the metrics scraper talk plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# /metrics is closed (404) unless METRICS_TOKEN is set (then it needs the bearer token) or METRICS_PUBLIC=true says
# the network in front of it is the protection.
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
WHITENOISE_USE_FINDERS = False
STORAGES = {
    **STORAGES,  # noqa: F405 (STORAGE_URL's, from base)
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = logging_settings.build(log_format=LOG_FORMAT, level=env.str("LOG_LEVEL", default="INFO"))
