import logging

from django_guid import get_guid


class RequestIdFilter(logging.Filter):
    """Puts the current request id (HTTP request or the Celery task it started) on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = get_guid() or "-"
        return True
