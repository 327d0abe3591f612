"""`{% load markdown %}{{ text|markdown }}`: Markdown rendered and sanitised (saas.core.markdown)."""

from django import template
from django.utils.safestring import SafeString

from saas.core.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str | None) -> SafeString:
    return render_markdown(text)
