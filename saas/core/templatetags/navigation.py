"""The workspace's navigation links, marked aria-current="page" where the person is (base.html)."""

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_link(context: template.Context, url: str, label: str, *also: str, exact: bool = False) -> SafeString:
    """A link that is current on its own page and below it (`exact`: only on it), and below any `also` prefix
    (a run's page belongs to Crews)."""
    request = context.get("request")
    path = request.path if request is not None else ""
    current = path == url if exact else any(path.startswith(prefix) for prefix in (url, *also) if prefix)
    if current:
        return format_html('<a href="{}" aria-current="page">{}</a>', url, label)
    return format_html('<a href="{}">{}</a>', url, label)
