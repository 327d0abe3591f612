"""Every form in the templates that removes, revokes, rotates, leaves, transfers or deletes asks first: it carries
data-confirm, which static/js/page.js turns into a confirmation (Cancel keeps the form from being sent)."""

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
DESTRUCTIVE = re.compile(r"\{% url '[a-z-]*(delete|remove|revoke|rotate|leave|transfer)[a-z-]*'")
FORM = re.compile(r"<form\b[^>]*>", re.S)


def test_every_destructive_form_asks_first():
    unconfirmed = []
    checked = 0
    for path in TEMPLATES.rglob("*.html"):
        for form in FORM.findall(path.read_text()):
            if DESTRUCTIVE.search(form):
                checked += 1
                if "data-confirm=" not in form:
                    unconfirmed.append(f"{path.relative_to(TEMPLATES)}: {form}")
    assert checked >= 8  # remove member, withdraw, rotate, revoke, leave, transfer, delete team/account/...
    assert not unconfirmed, "\n".join(unconfirmed)
