"""What the websocket consumers share: reading one JSON frame, and pulling a synchronous event stream one item
at a time in a worker thread, inside the org's scope."""

import json
from collections.abc import Iterator
from typing import Any

from django.db import close_old_connections

from saas.core.errors import ApplicationError
from saas.core.tenancy import org_scope


def read_frame(text_data: str | None, *, max_bytes: int) -> dict[str, Any]:
    """The frame as a JSON object, or an ApplicationError whose code and message go back to the browser."""
    if text_data is None or len(text_data.encode()) > max_bytes:
        raise ApplicationError(f"Send JSON text frames of at most {max_bytes} bytes.", code="invalid")
    try:
        content = json.loads(text_data)
    except ValueError:
        raise ApplicationError("The message is not valid JSON.", code="malformed") from None
    if not isinstance(content, dict):
        raise ApplicationError("Send a JSON object.", code="invalid")
    return content


def next_in_org_scope(events: Iterator[dict[str, Any]], org: Any) -> dict[str, Any] | None:
    """The next event (None at the end), computed in the org's scope; run it in a worker thread."""
    with org_scope(org):
        try:
            return next(events)
        except StopIteration:
            return None
        finally:
            close_old_connections()
