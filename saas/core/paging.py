"""Server-side pagination for the pages' tables: a Django Paginator page, and the query string (search and
filters) that its page links keep."""

from dataclasses import dataclass
from typing import Any

from django.core.paginator import Page, Paginator
from django.http import HttpRequest


@dataclass(frozen=True)
class TablePage:
    page: Page
    query: str  # the request's parameters without `page`, url-encoded ("" when none)

    @property
    def rows(self) -> Any:
        return self.page.object_list


def table_page(request: HttpRequest, items: Any, *, per_page: int, param: str = "page") -> TablePage:
    """The requested page of `items` (an ordered queryset or a list); a page number out of range or not a
    number gives the nearest page, as Paginator.get_page does."""
    page = Paginator(items, per_page).get_page(request.GET.get(param))
    query = request.GET.copy()
    query.pop(param, None)
    return TablePage(page, query.urlencode())
