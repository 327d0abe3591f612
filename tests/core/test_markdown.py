"""Markdown rendering (saas.core.markdown): tables and highlighted code render; hostile Markdown and HTML never
leave anything executable in the page."""

import re

import pytest
from bs4 import BeautifulSoup
from django.template import Context, Template

from saas.core.markdown import MAX_SOURCE_CHARS, highlight_css, render_markdown

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<iframe src=https://evil.example></iframe>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    "![x](javascript:alert(1))",
    '![x" onerror="alert(1)](http://x.example/a.png)',
    '[x](http://a.example/" onmouseover="alert(1))',
    "```html\n<script>alert(1)</script>\n```",
    '``` "><script>alert(1)</script>\ncode\n```',
    "<a href='javascript:alert(1)'>x</a>",
    "<div style='background:url(javascript:alert(1))'>x</div>",
    "| a |\n|---|\n| <script>alert(1)</script> |",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "<form action=https://evil.example><input name=password></form>",
    "<style>body{display:none}</style>",
]


READABLE_TAGS = {"p", "a", "code", "pre", "span", "table", "thead", "tbody", "tr", "th", "td", "strong", "em"}


def _executable(html: str) -> list[str]:
    """What a browser would act on: elements beyond reading ones, event handlers, styles, non-web links
    (parsed as a browser parses it, so escaped text does not count)."""
    found = []
    for element in BeautifulSoup(html, "html.parser").find_all(True):
        if element.name not in READABLE_TAGS:
            found.append(f"<{element.name}>")
        for name, value in element.attrs.items():
            if name.startswith("on") or name in {"src", "srcset", "formaction", "action"}:
                found.append(f"{element.name}[{name}]")
            if name == "style":
                found.append(f"{element.name}[style={value}]")
            if name == "href" and not re.match(r"(https?:|mailto:)", value.strip(), re.I):
                found.append(f"{element.name}[href={value}]")
    return found


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_markdown_renders_nothing_executable(source):
    html = str(render_markdown(source))
    assert _executable(html) == [], html


def test_tables_and_fenced_code_render_with_highlighting():
    html = str(
        render_markdown("| Plan | Price |\n|:--|--:|\n| Team | **$20** |\n\n```python\ndef f():\n    return 1\n```")
    )
    assert '<th class="align-left">Plan</th>' in html  # a class: the CSP refuses style attributes
    assert '<td class="align-right"><strong>$20</strong></td>' in html
    assert '<pre class="code"><code class="language-python"><span class="hl-k">def</span>' in html
    assert '\n    <span class="hl-k">return</span>' in html  # indentation kept


def test_unknown_languages_and_plain_fences_are_escaped_code():
    html = str(render_markdown("```nosuchlanguage\n<b>x</b>\n```"))
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>" not in html


def test_links_are_kept_and_marked_nofollow_and_images_become_links():
    html = str(render_markdown("[docs](https://example.com/a) ![chart](https://example.com/c.png)"))
    assert '<a href="https://example.com/a" rel="noopener noreferrer nofollow">docs</a>' in html
    assert '<a href="https://example.com/c.png" rel="noopener noreferrer nofollow">chart</a>' in html


def test_citation_markers_and_plain_text_stay_as_written():
    assert str(render_markdown("Refunds take 30 days [1].")) == "<p>Refunds take 30 days [1].</p>\n"
    assert render_markdown("") == "" and render_markdown(None) == ""


def test_oversized_text_is_cut_not_rendered_slowly():
    html = str(render_markdown("a" * (MAX_SOURCE_CHARS + 10_000)))
    assert html.count("a") <= MAX_SOURCE_CHARS + 10


def test_the_template_filter_renders_and_is_not_escaped_twice():
    rendered = Template("{% load markdown %}{{ text|markdown }}").render(Context({"text": "**hi** <b>x</b>"}))
    assert rendered == "<p><strong>hi</strong> &lt;b&gt;x&lt;/b&gt;</p>\n"


def test_the_shipped_highlight_stylesheet_is_the_generated_one(settings):
    shipped = (settings.BASE_DIR / "static" / "css" / "highlight.css").read_text()
    assert shipped == highlight_css()
