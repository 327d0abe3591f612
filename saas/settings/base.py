"""Settings shared by every environment. Everything that differs between machines comes from the environment
(12-factor, through django-environ); `.env.example` documents each variable."""

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from csp.constants import NONCE, NONE, SELF
from django_guid.integrations import CeleryIntegration

from saas.settings import logging as logging_settings
from saas.settings import sentry
from saas.settings import storage as storage_settings

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Embedded servers, uploads and the beat schedule of a dev machine live here (git-ignored).
DEVDATA_DIR = Path(os.environ.get("CREWDESK_DATA_DIR") or BASE_DIR / ".devdata")

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")
# Where API clients reach the API (shown beside keys): the API server's address (`make run`: port 8001); behind
# an Ingress that sends /v1 and /api to it on the site's host (deploy/k8s), the site's URL.
API_URL = env.str("API_URL", default=SITE_URL).rstrip("/")
# Days a data export (accounts/exports.py) can be downloaded before its file is deleted; an org may keep less.
DATA_EXPORT_KEEP_DAYS = env.int("DATA_EXPORT_KEEP_DAYS", default=7)

INSTALLED_APPS = [
    "daphne",
    "saas.core.apps.CrewdeskAdminConfig",  # django.contrib.admin with our site (saas/core/admin.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_prometheus",
    "django_guid",
    "csp",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "saas.core",
    "saas.llm",
    "accounts",
    "djstripe",
    "billing",
    "documents",
    "agents",
    "analytics",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django_guid.middleware.guid_middleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",  # before anything renders: it gives each request its nonce
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "saas.core.middleware.BodySizeLimitMiddleware",
    "accounts.middleware.AuthRateLimitMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "accounts.middleware.OrgMiddleware",  # last: it calls the view itself, inside the org's scope
]

ROOT_URLCONF = "saas.urls"
ASGI_APPLICATION = "saas.asgi.application"
WSGI_APPLICATION = "saas.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.org_context",
            ],
        },
    },
]

# --- Data stores -------------------------------------------------------------------------------------------
# DATABASE_URL / REDIS_URL point at real servers (docker-compose, a managed service). Unset, `make run` and
# `make test` start embedded ones (saas/devstack.py) and set them. The defaults are the usual local ports.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgresql://postgres@127.0.0.1:5432/crewdesk"),
}
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
# Under ASGI, Django wants pooled connections rather than persistent ones: psycopg's pool (a new connection per
# request costs milliseconds on every call). DATABASE_POOL=false for a server-side pooler such as PgBouncer.
DATABASES["default"]["CONN_MAX_AGE"] = 0
_db_options = DATABASES["default"].setdefault("OPTIONS", {})
# An unreachable database must fail fast (readyz answers within seconds), not hang on TCP retries.
_db_options["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=3)
# The pool is per process (each daphne process, each Celery child): PostgreSQL's max_connections must cover
# DATABASE_POOL_MAX times the number of processes. A request holds a connection only while its queries run,
# never while it waits on a model (saas/core/db.py), so ten serve hundreds of concurrent model calls; a request
# that finds none free waits DATABASE_POOL_TIMEOUT seconds, then gets a 503 (saas.core.errors).
DATABASE_POOL_MAX = env.int("DATABASE_POOL_MAX", default=10)
if env.bool("DATABASE_POOL", default=True):
    _db_options["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=1),
        "max_size": DATABASE_POOL_MAX,
        "timeout": env.int("DATABASE_POOL_TIMEOUT", default=10),
    }
# Websocket consumers run their blocking steps in two thread pools of their own (saas/core/threads.py), never
# asyncio's default one (six threads on two cores). LLM_STREAM_THREADS: answers streamed at once per process
# (more wait for a thread, none fails); WEBSOCKET_DB_THREADS: their short database steps (access checks).
LLM_STREAM_THREADS = env.int("LLM_STREAM_THREADS", default=256)
WEBSOCKET_DB_THREADS = env.int("WEBSOCKET_DB_THREADS", default=DATABASE_POOL_MAX)
# The gateway's short synchronous steps on the event loop's behalf (saas.core.threads.hop): none waits on a model.
LLM_GATEWAY_THREADS = env.int("LLM_GATEWAY_THREADS", default=16)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The web servers' garbage collector (saas/core/heap.py): what is alive once the application is loaded is frozen
# out of full collections, and young collections run every GC_GEN0_THRESHOLD allocations (CPython's: 700), so
# full collections (a pause of the event loop) come that much more rarely.
GC_FREEZE = env.bool("GC_FREEZE", default=True)
GC_GEN0_THRESHOLD = env.int("GC_GEN0_THRESHOLD", default=50_000)

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Per process, for our own keys and for the cache, each: a Redis command takes a connection for a millisecond,
# so a few dozen serve hundreds of threads. A thread that finds none free waits up to REDIS_POOL_TIMEOUT seconds
# (redis-py's plain pool would fail at once with "Too many connections"). Redis's maxclients (10,000 by default)
# must cover 2 x REDIS_POOL_MAX x processes, plus Celery's and channels-redis's own connections.
REDIS_POOL_MAX = env.int("REDIS_POOL_MAX", default=50)
REDIS_POOL_TIMEOUT = env.float("REDIS_POOL_TIMEOUT", default=5.0)

CACHES: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "saas.core.cache.SharedPoolRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "crewdesk",
        "OPTIONS": {
            "socket_connect_timeout": 2,
            "socket_timeout": 2,
            "pool_class": "redis.BlockingConnectionPool",
            "max_connections": REDIS_POOL_MAX,
            "timeout": REDIS_POOL_TIMEOUT,
        },
    }
}

CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 reads with a 5 s socket timeout by default, and channels-redis waits for messages with a
        # 5 s BZPOPMIN: the two raced, and a quiet websocket died with "Timeout reading". Reads wait longer.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}], "prefix": "crewdesk:asgi"},
    }
}

SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# --- Celery ------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=15 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=14 * 60)
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Three queues, each consumed by its own worker Deployment (deploy/k8s/), so a long crew run never starves
# ingestion; everything not routed here (beat's housekeeping, exports, billing) goes to "default". `make run`'s
# one worker consumes all three. tests/deploy/test_celery_routes.py holds these to the manifests.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "documents.ingest_document": {"queue": "ingestion"},
    "agents.run_crew": {"queue": "crews"},
}
CELERY_BEAT_SCHEDULE_FILENAME = env.str(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(DEVDATA_DIR / "celerybeat-schedule")
)
CELERY_BEAT_SCHEDULE = {
    "core-beat-heartbeat": {"task": "core.beat_heartbeat", "schedule": 30.0},
    "documents-recover-stalled": {"task": "documents.recover_stalled", "schedule": 60.0},
    "documents-sync-collection-indexes": {"task": "documents.sync_collection_indexes", "schedule": 600.0},
    "agents-recover-stalled-runs": {"task": "agents.recover_stalled_runs", "schedule": 60.0},
    "agents-start-scheduled-runs": {"task": "agents.start_scheduled_runs", "schedule": 30.0},
    "billing-report-overage": {"task": "billing.report_overage", "schedule": 3600.0},
    "accounts-purge-retention": {"task": "accounts.purge_retention", "schedule": 3600.0},
    "accounts-resume-erasures": {"task": "accounts.resume_erasures", "schedule": 300.0},
    "llm-drain-ledger": {"task": "llm.drain_ledger", "schedule": env.float("LLM_LEDGER_DRAIN_SECONDS", default=2.0)},
    "analytics-rollup-hours": {"task": "analytics.rollup_hours", "schedule": 300.0},
}

# --- Auth --------------------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
# Sign-up never says whether an address has an account: a new and a known address get the same "check your
# email" page; the known address's owner gets an "you already have an account" email instead of a new account.
# That needs verification to be mandatory (allauth's enumeration prevention rests on it): an account is signed
# in once its address is confirmed (the link signs it in, in the same browser).
ACCOUNT_EMAIL_VERIFICATION = env.str("ACCOUNT_EMAIL_VERIFICATION", default="mandatory")
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_EMAIL_UNKNOWN_ACCOUNTS = True  # a reset for an unknown address: a note to that address, same page
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_FORMS = {"signup": "accounts.forms.SignupForm"}
# allauth's own limits. login_failed: "/ip" counts failed sign-ins per client address across accounts
# (credential stuffing); "/key" counts them per account *and* client address (accounts/adapter.py), so a
# stranger's wrong passwords lock out only the stranger, never the owner signing in from elsewhere.
ACCOUNT_RATE_LIMITS = {
    "login_failed": env.str("ACCOUNT_RATE_LIMIT_LOGIN_FAILED", default="10/m/ip,5/5m/key"),
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
}
# Addresses at disposable-mail services (the disposable-email-domains list, updated with the package) are
# refused at sign-up and when an address is added; domains listed here are let through anyway.
SIGNUP_REFUSE_DISPOSABLE_EMAIL = env.bool("SIGNUP_REFUSE_DISPOSABLE_EMAIL", default=True)
SIGNUP_ALLOWED_DISPOSABLE_DOMAINS = env.list("SIGNUP_ALLOWED_DISPOSABLE_DOMAINS", default=[])
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Crewdesk] "
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_ADAPTER = "accounts.adapter.MFAAdapter"  # two-factor secrets encrypted at rest
MFA_TOTP_ISSUER = "Crewdesk"
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(DEVDATA_DIR / "mail"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Crewdesk <noreply@localhost>")

# --- API ---------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "accounts.authentication.CsrfSessionAuthentication",
    ],
    "DEFAULT_PAGINATION_CLASS": "saas.core.pagination.StableCursorPagination",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "saas.core.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "saas.core.errors.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "saas.core.negotiation.JsonAnswers",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Crewdesk API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "DESCRIPTION": "Authenticate with `Authorization: Bearer cdk_live_...` (an org API key). "
    'Every error has the shape {"error": {code, message, details, request_id}}.',
    # Swagger UI from the drf-spectacular-sidecar package: served by us, never from a CDN.
    # One name for a choice set several fields share.
    "ENUM_NAME_OVERRIDES": {"GuardrailModeEnum": ["off", "flag", "block"]},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # 3.1 is JSON Schema proper: the OpenAI-compatible request is a pydantic model, whose optional fields are
    # `null`-able, which OpenAPI 3.0 cannot say.
    "OAS_VERSION": "3.1.0",
    # Our PATCH views validate whole bodies (not partial updates): one component per serializer, as it is.
    "COMPONENT_SPLIT_PATCH": False,
}

# Requests per window. Per API key, per signed-in user and per org on the API; per IP on the sign-in,
# sign-up and password-reset forms. A plan may set its own org limit (billing.Plan.api_rate_limit).
# How long a process may keep an API key it has seen in memory; revoking or rotating a key, or changing its
# org, reaches every process at once anyway (saas/core/memo.py). 0 reads the key on every request.
API_KEY_CACHE_SECONDS = env.int("API_KEY_CACHE_SECONDS", default=60)
# An API key used from more networks (/24 IPv4, /48 IPv6) than this in one hour alerts the org's owners, once an
# hour (accounts/key_guard.py). 0 turns the alert off.
API_KEY_NETWORKS_ALERT = env.int("API_KEY_NETWORKS_ALERT", default=20)

RATE_LIMITS = {
    "api_key": env.str("RATE_LIMIT_API_KEY", default="600/minute"),
    "user": env.str("RATE_LIMIT_USER", default="300/minute"),
    "org": env.str("RATE_LIMIT_ORG", default="3000/minute"),
    "auth_ip": env.str("RATE_LIMIT_AUTH_IP", default="10/minute"),
    # Sign-ups that would go ahead, per client address and across the site (a burst of fake accounts).
    "signup_ip": env.str("RATE_LIMIT_SIGNUP_IP", default="10/hour"),
    "signup_global": env.str("RATE_LIMIT_SIGNUP_GLOBAL", default="100/minute"),
}
# Endpoints that make a model answer or ingest a file have buckets of their own, per org and per API key (or
# signed-in member), counted instead of the general ones above: a burst of asks cannot starve GET calls. A plan
# may set its own (billing.Plan.endpoint_rate_limits). RATE_LIMIT_<ENDPOINT>_ORG / _KEY, e.g. RATE_LIMIT_ASK_KEY.
_ENDPOINT_RATES = {  # endpoint: (per org, per key or member)
    "ask": ("600/minute", "120/minute"),  # POST /api/v1/ask
    "generate": ("600/minute", "120/minute"),  # POST /api/v1/generate
    "chat_completions": ("1200/minute", "300/minute"),  # POST /v1/chat/completions
    "embeddings": ("3000/minute", "600/minute"),  # POST /v1/embeddings
    "upload": ("120/minute", "30/minute"),  # POST /api/v1/documents
}
ENDPOINT_RATE_LIMITS = {
    endpoint: {
        "org": env.str(f"RATE_LIMIT_{endpoint.upper()}_ORG", default=per_org),
        "key": env.str(f"RATE_LIMIT_{endpoint.upper()}_KEY", default=per_key),
    }
    for endpoint, (per_org, per_key) in _ENDPOINT_RATES.items()
}
# Request bodies are limited where their bytes arrive (saas/core/http_limits.py, saas/core/http_server.py): a
# declared length over the route's limit is refused with 413 before any of the body is read, and a chunked body
# is cut off at the limit. The API and the OpenAI-compatible routes take API_MAX_BODY_BYTES, the document upload
# DOCUMENTS_MAX_BYTES (plus the multipart envelope), browser forms DATA_UPLOAD_MAX_MEMORY_SIZE.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440)  # Django's default
# Proxies whose X-Forwarded-For is believed (saas/core/client_ip.py), as networks: "10.0.0.0/8,2001:db8::/32".
# Empty (the default): the header is ignored and the peer's address is the client's.
try:
    TRUSTED_PROXIES = [
        str(ipaddress.ip_network(cidr, strict=False)) for cidr in env.list("TRUSTED_PROXIES", default=[])
    ]
except ValueError as exc:  # one line, no traceback, from manage.py, daphne and celery alike
    sys.exit(f"TRUSTED_PROXIES: {exc} (use networks such as 10.0.0.0/8,fd00::/8)")
# Seconds a client has from the first byte of a request to the last byte of its body (request line, headers,
# body): a body declared but never sent, or sent a byte at a time, gets 408 and its connection is closed.
HTTP_REQUEST_TIMEOUT = env.float("HTTP_REQUEST_TIMEOUT", default=120.0)
# Connections waiting for daphne to accept them (saas/core/http_server.py; the kernel caps it at somaxconn):
# Twisted's 50 overflows under a burst of clients while the event loop is busy, and the kernel resets them.
HTTP_LISTEN_BACKLOG = env.int("HTTP_LISTEN_BACKLOG", default=1024)
# Seconds the API server (saas/core/api_server.py) keeps a connection that waits for its next request, or for its
# first: longer than clients' pools (and load balancers, 60 s) keep one idle, so they close it first.
HTTP_KEEP_ALIVE_TIMEOUT = env.int("HTTP_KEEP_ALIVE_TIMEOUT", default=75)

# --- LLM gateway -------------------------------------------------------------------------------------------
# Upstreams are OpenAI-compatible servers (OpenAI, vLLM, Ollama, LM Studio, llama.cpp, OpenRouter, ...); the
# model registry (saas/llm/registry.yaml, then the admin) says which model lives on which upstream.
LLM_UPSTREAMS = {
    "openai": {
        # Unset: no OpenAI-compatible upstream, and `auto` uses the offline local engine.
        "base_url": env.str("LLM_OPENAI_BASE_URL", default=""),
        "api_key": env.str("LLM_OPENAI_API_KEY", default=""),
    },
}
# Whether teams may point their own providers (bring your own key) at private or loopback addresses: off for a
# shared SaaS (a team admin could otherwise make the server call its internal network), on for a self-hosted
# install whose teams run Ollama or vLLM next to it.
LLM_ORG_PROVIDERS_ALLOW_PRIVATE = env.bool("LLM_ORG_PROVIDERS_ALLOW_PRIVATE", default=False)
LLM_ENCRYPTION_KEYS = env.list("LLM_ENCRYPTION_KEYS", default=[])
LLM_ROUTER = {
    "attempt_timeout": env.float("LLM_ATTEMPT_TIMEOUT", default=60.0),  # seconds per attempt
    "max_retries": env.int("LLM_MAX_RETRIES", default=2),  # per model, before falling back
    "backoff_base": env.float("LLM_BACKOFF_BASE", default=0.5),
    "backoff_max": env.float("LLM_BACKOFF_MAX", default=8.0),
    "max_retry_after": env.float("LLM_MAX_RETRY_AFTER", default=30.0),  # a longer Retry-After: fall back instead
}
LLM_BREAKER = {
    "failure_threshold": env.int("LLM_BREAKER_FAILURES", default=5),
    "window": env.int("LLM_BREAKER_WINDOW", default=60),
    "cooldown": env.int("LLM_BREAKER_COOLDOWN", default=30),
    # How long a process trusts its reading of a closed circuit with no failure on record (saas/llm/breaker.py).
    "clean_read_seconds": env.float("LLM_BREAKER_CLEAN_READ_SECONDS", default=1.0),
}
# `auto` picks the large tier when any rule says so, the small tier otherwise.
LLM_AUTO_RULES = {
    "large_if_prompt_tokens_over": env.int("LLM_AUTO_LARGE_TOKENS", default=3000),
    "large_for_features": env.list("LLM_AUTO_LARGE_FEATURES", default=["crew", "eval"]),
    "large_if_complexity": ["high"],
}
LLM_CACHE_TTL = env.int("LLM_CACHE_TTL", default=3600)
# How long a process may keep the model registry and orgs' AI settings in memory; changes through the ORM
# reach every process at once anyway (saas/llm/config.py). 0 reads them from the database on every call.
LLM_CONFIG_CACHE_SECONDS = env.int("LLM_CONFIG_CACHE_SECONDS", default=60)
# Cosine similarity above which a single-turn question counts as already answered (conservative on purpose).
LLM_SEMANTIC_THRESHOLD = env.float("LLM_SEMANTIC_THRESHOLD", default=0.95)
LLM_PROMPT_VERSION = env.str("LLM_PROMPT_VERSION", default="1")
# The ledger (saas/llm/ledger.py). Batched: the API's hot paths (/v1, generate) hand each call's row to a
# Redis stream that the `llm.drain_ledger` task writes in batches every LLM_LEDGER_DRAIN_SECONDS (the browser,
# ask and crews always write at once). A row a writer took and never confirmed is taken over after
# LLM_LEDGER_CLAIM_SECONDS.
LLM_LEDGER = {
    "batched": env.bool("LLM_LEDGER_BATCHED", default=True),
    "drain_seconds": env.float("LLM_LEDGER_DRAIN_SECONDS", default=2.0),
    "batch_size": env.int("LLM_LEDGER_BATCH_SIZE", default=500),
    "claim_seconds": env.int("LLM_LEDGER_CLAIM_SECONDS", default=60),
}
# Guardrails (saas/llm/guardrails.py). Similarity thresholds are cosine similarities with the local embedding
# model; the similarity detector runs on passages and tool results, and on members' messages only when asked
# (it costs an embedding per message). Moderation asks the named upstream's /v1/moderations when set.
GUARDRAILS = {
    "injection_similarity": env.float("GUARDRAILS_INJECTION_SIMILARITY", default=0.62),
    "topic_similarity": env.float("GUARDRAILS_TOPIC_SIMILARITY", default=0.45),
    "semantic_on_input": env.bool("GUARDRAILS_SEMANTIC_ON_INPUT", default=False),
    "semantic_on_untrusted": env.bool("GUARDRAILS_SEMANTIC_ON_UNTRUSTED", default=True),
}
LLM_MODERATION = {
    "upstream": env.str("LLM_MODERATION_UPSTREAM", default=""),
    "model": env.str("LLM_MODERATION_MODEL", default="omni-moderation-latest"),
    "timeout": env.float("LLM_MODERATION_TIMEOUT", default=5.0),
}
# Regions (ISO 3166 codes) in which national phone numbers such as "020 7946 0958" are recognised, tried in order,
# for orgs that have not chosen their own; numbers written with +CC are recognised whatever the regions.
LLM_PII_PHONE_REGIONS = env.list("LLM_PII_PHONE_REGIONS", default=["US", "GB", "DE", "FR"])

# --- Static files ------------------------------------------------------------------------------------------
STATIC_URL = "static/"
# Development serves files straight from static/ (WhiteNoise with finders); production collects them first.
STATIC_ROOT = env.str("STATIC_ROOT", default=None)
WHITENOISE_USE_FINDERS = True
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = env.str("MEDIA_ROOT", default=str(DEVDATA_DIR / "media"))
# Uploaded originals and data exports (saas/settings/storage.py): local disk under MEDIA_ROOT unless STORAGE_URL
# names an S3 bucket (or another directory). Every file is encrypted with LLM_ENCRYPTION_KEYS whatever the backend.
STORAGE_URL = env.str("STORAGE_URL", default="")
try:
    STORAGES = {
        "default": storage_settings.storage_from_url(STORAGE_URL, media_root=MEDIA_ROOT),
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
except storage_settings.StorageUrlError as exc:
    sys.exit(f"Crewdesk refuses to start: {exc}")
# Files stored before encryption at rest are read as they are until `manage.py rotate_encryption_keys` has
# encrypted them (its --check counts them); then false refuses any file not encrypted by us.
STORAGE_ALLOW_UNENCRYPTED = env.bool("STORAGE_ALLOW_UNENCRYPTED", default=True)

# Documents: what an upload may be, and how ingestion cuts it up.
DOCUMENTS_MAX_BYTES = env.int("DOCUMENTS_MAX_BYTES", default=20 * 1024 * 1024)
DOCUMENTS_MAX_PAGES = env.int("DOCUMENTS_MAX_PAGES", default=500)
DOCUMENTS_MAX_UNPACKED_BYTES = env.int("DOCUMENTS_MAX_UNPACKED_BYTES", default=200 * 1024 * 1024)  # DOCX zips
# Memory one extraction may use above the worker's own; each format's unpacked-size limit follows from it
# (documents/extraction.py has the measured bytes of memory per byte of input).
DOCUMENTS_EXTRACTION_MEMORY_BYTES = env.int("DOCUMENTS_EXTRACTION_MEMORY_BYTES", default=512 * 1024 * 1024)
DOCUMENTS_CHUNK_TOKENS = (
    env.int("DOCUMENTS_CHUNK_MIN_TOKENS", default=300),
    env.int("DOCUMENTS_CHUNK_MAX_TOKENS", default=450),
)
DOCUMENTS_CHUNK_OVERLAP = env.int("DOCUMENTS_CHUNK_OVERLAP", default=50)
DOCUMENTS_EMBED_BATCH = env.int("DOCUMENTS_EMBED_BATCH", default=256)  # texts per gateway call (one ledger row)
DOCUMENTS_EMBEDDING_MODEL = env.str("DOCUMENTS_EMBEDDING_MODEL", default="local-minilm")
# An ingestion that has not moved for this long lost its worker (the task's hard limit is 660 s): the watchdog
# queues it again, up to DOCUMENTS_MAX_ATTEMPTS runs in all, then marks it failed with a reason.
DOCUMENTS_STALLED_AFTER = env.int("DOCUMENTS_STALLED_AFTER", default=900)
DOCUMENTS_MAX_ATTEMPTS = env.int("DOCUMENTS_MAX_ATTEMPTS", default=3)
# Retrieval: results per search, the cosine similarity a passage found only by meaning needs to count, and
# above which two passages are the same one. An answer sentence counts as supported at DOCUMENTS_SUPPORTED.
DOCUMENTS_SEARCH_TOP_K = env.int("DOCUMENTS_SEARCH_TOP_K", default=5)
DOCUMENTS_MIN_SIMILARITY = env.float("DOCUMENTS_MIN_SIMILARITY", default=0.3)
DOCUMENTS_DUPLICATE_SIMILARITY = env.float("DOCUMENTS_DUPLICATE_SIMILARITY", default=0.97)
DOCUMENTS_SUPPORTED = env.float("DOCUMENTS_SUPPORTED", default=0.5)
# Vector search: scopes (an org, or one of its collections) of up to DOCUMENTS_EXACT_SEARCH_ROWS chunks are
# read exactly; larger ones through the HNSW index with ef_search = DOCUMENTS_HNSW_CANDIDATES x results / the
# scope's share of all chunks, at least DOCUMENTS_HNSW_EF_SEARCH (bench/retrieval.py measures the trade-off).
DOCUMENTS_EXACT_SEARCH_ROWS = env.int("DOCUMENTS_EXACT_SEARCH_ROWS", default=20_000)
DOCUMENTS_HNSW_EF_SEARCH = env.int("DOCUMENTS_HNSW_EF_SEARCH", default=400)
DOCUMENTS_HNSW_CANDIDATES = env.float("DOCUMENTS_HNSW_CANDIDATES", default=4.0)
# A collection of more than DOCUMENTS_COLLECTION_INDEX_ROWS ready chunks, and no more than
# DOCUMENTS_COLLECTION_INDEX_MAX_SHARE of them all, gets its own HNSW graph (a partial index,
# documents/indexing.py), searched with DOCUMENTS_COLLECTION_EF_SEARCH candidates and no filtering (40: recall@10
# 1.000 and @20 0.998 on a 100,000-chunk collection, 2-3 ms of CPU; 64 cost 4 ms for the same recall).
DOCUMENTS_COLLECTION_INDEX_ROWS = env.int("DOCUMENTS_COLLECTION_INDEX_ROWS", default=DOCUMENTS_EXACT_SEARCH_ROWS)
DOCUMENTS_COLLECTION_EF_SEARCH = env.int("DOCUMENTS_COLLECTION_EF_SEARCH", default=40)
DOCUMENTS_COLLECTION_INDEX_MAX_SHARE = env.float("DOCUMENTS_COLLECTION_INDEX_MAX_SHARE", default=0.3)  # of all chunks
# Building the HNSW index (bench/retrieval.py, REINDEX): memory in bytes, 0 = derived from this machine.
DOCUMENTS_INDEX_BUILD_MEMORY = env.int("DOCUMENTS_INDEX_BUILD_MEMORY", default=0)

# --- Billing -----------------------------------------------------------------------------------------------
# Stripe is switched on by its secret key; without it every org stays on the default plan (Free) and limits
# are enforced locally. dj-stripe keeps its copy of customers, subscriptions, invoices and events.
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_LIVE_MODE = STRIPE_SECRET_KEY.startswith("sk_live_")
STRIPE_LIVE_SECRET_KEY = STRIPE_SECRET_KEY if STRIPE_LIVE_MODE else ""
STRIPE_TEST_SECRET_KEY = "" if STRIPE_LIVE_MODE else STRIPE_SECRET_KEY
# The signing secret of the webhook endpoint (Stripe's dashboard or `stripe listen` shows it):
# `manage.py stripe_setup` records it with dj-stripe and prints the endpoint's URL.
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
# Another Stripe-compatible server (the tests' local one); empty: Stripe itself.
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
# Overage is reported to this Stripe billing meter (its events carry the customer and the request count).
STRIPE_METER_EVENT_NAME = env.str("STRIPE_METER_EVENT_NAME", default="crewdesk_ai_requests")
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
# A subscription whose payment failed keeps working this long (past_due), then AI requests are refused until
# the invoice is paid.
BILLING_PAST_DUE_GRACE_DAYS = env.int("BILLING_PAST_DUE_GRACE_DAYS", default=7)

# --- Browser security headers ------------------------------------------------------------------------------
# A strict Content-Security-Policy (django-csp) on every response: scripts and styles come from our own origin
# (static/, the Swagger UI sidecar, the admin's files), and an inline <script> or <style> runs only with the
# response's nonce, `nonce="{{ request.csp_nonce }}"`; inline event handlers, `javascript:` URLs and style
# attributes are refused. 'self' in connect-src covers ws:/wss: to the same host (CSP Level 3). Forms post to
# us, and a form answered by a redirect to Stripe's hosted Checkout or customer portal needs those origins in
# form-action (browsers check form-action on the redirect too).
_csp_report_uri = env.str("CSP_REPORT_URI", default="")  # where browsers POST violation reports; empty: none
_csp_report_only = env.bool("CSP_REPORT_ONLY", default=False)  # true: report violations, enforce nothing
_stripe_form_targets: list[str] = []
if STRIPE_SECRET_KEY and STRIPE_API_BASE:  # a Stripe-compatible server (the tests' local one) hosts both pages
    _stripe_form_targets = ["{0.scheme}://{0.netloc}".format(urlsplit(STRIPE_API_BASE))]
elif STRIPE_SECRET_KEY:
    _stripe_form_targets = ["https://checkout.stripe.com", "https://billing.stripe.com"]
_csp_policy: dict[str, Any] = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF, *_stripe_form_targets],
        "frame-ancestors": [NONE],
        **({"report-uri": [_csp_report_uri]} if _csp_report_uri else {}),
    }
}
CONTENT_SECURITY_POLICY = None if _csp_report_only else _csp_policy
CONTENT_SECURITY_POLICY_REPORT_ONLY = _csp_policy if _csp_report_only else None
# Powerful browser features no page of ours uses are switched off for us and for anything we might embed.
# fmt: off
_DENIED_FEATURES = [
    "accelerometer", "ambient-light-sensor", "autoplay", "bluetooth", "browsing-topics", "camera", "display-capture",
    "encrypted-media", "fullscreen", "geolocation", "gyroscope", "hid", "idle-detection", "magnetometer",
    "microphone", "midi", "payment", "picture-in-picture", "screen-wake-lock", "serial", "usb", "xr-spatial-tracking",
]
# fmt: on
PERMISSIONS_POLICY: dict[str, list[str]] = {feature: [] for feature in _DENIED_FEATURES}
# Django's SecurityMiddleware (these are its defaults, written down): no MIME sniffing, the path and query of
# our pages never leave the site in a Referer, no framing (X-Frame-Options for browsers without
# frame-ancestors), and a window opened from elsewhere cannot script ours.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# --- Crews -------------------------------------------------------------------------------------------------
# A run's worker writes a heartbeat at every step; a running run without one for AGENTS_RUN_STALLED_AFTER
# seconds lost its worker: the watchdog (beat, every minute) queues it again to resume after its last finished
# task, up to AGENTS_RUN_MAX_ATTEMPTS deliveries, then fails it with the reason.
AGENTS_RUN_STALLED_AFTER = env.int("AGENTS_RUN_STALLED_AFTER", default=300)
AGENTS_RUN_MAX_ATTEMPTS = env.int("AGENTS_RUN_MAX_ATTEMPTS", default=3)
AGENTS_RUN_SOFT_TIME_LIMIT = env.int("AGENTS_RUN_SOFT_TIME_LIMIT", default=30 * 60)
AGENTS_RUN_TIME_LIMIT = env.int("AGENTS_RUN_TIME_LIMIT", default=31 * 60)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Observability -----------------------------------------------------------------------------------------
# Request ids: X-Request-ID is accepted when it is a UUID (hex or dashed) and replaced by a fresh one
# otherwise, so a hostile header never reaches our logs; it is returned on every response and carried into
# Celery tasks started by the request.
DJANGO_GUID = {
    "GUID_HEADER_NAME": "X-Request-ID",
    "VALIDATE_GUID": True,
    "RETURN_HEADER": True,
    "EXPOSE_HEADER": True,
    "INTEGRATIONS": [CeleryIntegration(use_django_logging=False, log_parent=False)],
}
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = logging_settings.build(log_format=LOG_FORMAT, level=LOG_LEVEL)

METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Without a token, /metrics is open only where this is true: locally by default, never by default in production.
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=True)
PROMETHEUS_METRIC_NAMESPACE = "crewdesk"

SENTRY_DSN = env.str("SENTRY_DSN", default="")
sentry.init(
    dsn=SENTRY_DSN,
    environment=env.str("SENTRY_ENVIRONMENT", default="development"),
    traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
)
