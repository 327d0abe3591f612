from typing import Any

from rest_framework.pagination import CursorPagination


class StableCursorPagination(CursorPagination):
    """Cursor pagination (stable under inserts) ordered by each view's `ordering`, then id."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_ordering(self, request: Any, queryset: Any, view: Any) -> tuple[str, ...]:
        ordering = getattr(view, "ordering", "-created_at")
        tie_breaker = "-id" if ordering.startswith("-") else "id"
        return (ordering, tie_breaker)
