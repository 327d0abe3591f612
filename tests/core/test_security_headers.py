"""Every HTML page carries a strict Content-Security-Policy with a fresh nonce, a Permissions-Policy and Django's
security headers, and none of them holds what that policy would refuse: an inline script without the nonce, an
inline event handler, a `javascript:` URL, a style attribute. The pages are found by walking the URL conf (our
pages, allauth's, the API docs), signed in as an owner and anonymously, plus the admin and the error pages."""

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from bs4 import BeautifulSoup
from django.contrib import admin
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, path, reverse

import saas.urls
from accounts.models import Membership, Notification
from tests.accounts.factories import (
    ApiKeyFactory,
    InvitationFactory,
    MembershipFactory,
    UserFactory,
)
from tests.agents.factories import (
    ConversationFactory,
    CrewFactory,
    FeedbackFactory,
    MessageFactory,
    RunFactory,
    RunStepFactory,
)
from tests.analytics.factories import EvalCaseFactory, SpanFactory
from tests.conftest import run_python, subprocess_env
from tests.documents.factories import ChunkFactory, DocumentFactory
from tests.llm.factories import ExperimentFactory, LLMCallFactory, OrgProviderFactory, PromptVersionFactory

pytestmark = pytest.mark.django_db

# Routes that never answer with a page of ours: machine endpoints, the API (JSON only), Stripe's webhook.
NOT_PAGES = ("api/v1/", "v1/", "api/schema/", "stripe/", "healthz", "readyz", "metrics", "admin/")
INVITATION_TOKEN = "an-invitation-token-for-the-page-walk"
SCRIPT_TYPES = {"", "text/javascript", "application/javascript", "module"}  # the rest are data blocks
NONCE = re.compile(r"'nonce-([A-Za-z0-9+/=]+)'")


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def _fill(route: str, params: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in params, f"{route}: teach this test a value for <{name}>"
        return params[name]

    filled = re.sub(r"\(\?P<(\w+)>[^)]*\)", value, route)
    filled = re.sub(r"<(?:\w+:)?(\w+)>", value, filled)
    return "/" + filled.replace("^", "").replace("$", "")


def page_paths(params: dict[str, str]) -> list[str]:
    paths = [_fill(r, params) for r in _walk(get_resolver().url_patterns) if not r.startswith(NOT_PAGES)]
    assert len(paths) >= 60
    return paths


def _a_team_with_one_of_everything() -> tuple[Membership, dict[str, str]]:
    owner: Any = MembershipFactory(role=Membership.Role.OWNER)
    org = owner.organization
    other = MembershipFactory(organization=org)
    conversation = ConversationFactory(organization=org, user=owner.user)
    MessageFactory(organization=org, conversation=conversation)
    run = RunFactory(organization=org)
    RunStepFactory(organization=org, run=run)
    document = DocumentFactory(organization=org)
    ChunkFactory(organization=org, document=document)
    case = EvalCaseFactory(organization=org)
    invitation = InvitationFactory(organization=org, token_hash=hashlib.sha256(INVITATION_TOKEN.encode()).hexdigest())
    params = {
        "org_slug": org.slug,
        "conversation_id": str(conversation.id),
        "crew_id": str(CrewFactory(organization=org).id),
        "run_id": str(run.id),
        "document_id": str(document.id),
        "member_id": str(other.id),
        "invitation_id": str(invitation.id),
        "key_id": str(ApiKeyFactory(organization=org).id),
        "call_id": str(LLMCallFactory(organization=org).id),
        "provider_id": str(OrgProviderFactory(organization=org).id),
        "notification_id": str(Notification.all_orgs.create(organization=org, user=owner.user, title="Hello").id),
        "export_id": str(uuid.uuid4()),  # a download is a zip, not a page: its 404 is one
        "token": INVITATION_TOKEN,
        "key": "not-a-key",
        "uidb36": "1",
        # Insights (analytics): a dataset with a case, a trace with a span, a prompt version, an experiment
        "dataset_id": str(case.dataset_id),
        "case_id": str(case.id),
        "trace_id": str(SpanFactory(organization=org).trace_id),
        "version_id": str(PromptVersionFactory(organization=org).id),
        "experiment_id": str(ExperimentFactory(organization=org).id),
        "feedback_id": str(FeedbackFactory(organization=org).id),
    }
    return owner, params


def boom(request):
    raise RuntimeError("a bug")


urlpatterns = [path("boom/", boom), *saas.urls.urlpatterns]  # the app's URLs plus a view that fails
handler404 = saas.urls.handler404
handler500 = saas.urls.handler500


def _admin_paths(client: Client) -> list[str]:
    """The admin's index, each app's index, each model's list and add form, and the first object's form."""
    paths = [reverse("admin:index"), reverse("admin:password_change")]
    for model in admin.site._registry:
        meta = model._meta
        paths.append(reverse("admin:app_list", args=[meta.app_label]))
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        paths += [changelist, reverse(f"admin:{meta.app_label}_{meta.model_name}_add")]
        listing = BeautifulSoup(client.get(changelist).content, "html.parser")
        first = listing.select_one("#result_list tbody th a[href]")
        if first:
            paths.append(str(first["href"]))
    return list(dict.fromkeys(paths))


@dataclass
class Page:
    label: str
    status: int
    headers: dict[str, str]
    html: str


def every_html_page() -> list[Page]:
    owner, params = _a_team_with_one_of_everything()
    superuser = UserFactory(is_staff=True, is_superuser=True)
    signed_in, anonymous, staff = Client(), Client(), Client(raise_request_exception=False)
    signed_in.force_login(owner.user)
    staff.force_login(superuser)
    visits: list[tuple[str, Client, str]] = [
        *((f"owner GET {p}", signed_in, p) for p in page_paths(params)),
        *((f"anonymous GET {p}", anonymous, p) for p in page_paths(params)),
        *((f"admin GET {p}", staff, p) for p in _admin_paths(staff)),
        ("API docs", anonymous, "/api/docs/"),
        ("404 page", signed_in, f"/o/{params['org_slug']}/no-such-page/"),
        ("404 page, anonymous", anonymous, "/no-such-page/"),
    ]
    pages = []
    for label, client, url in visits:
        response = client.get(url)
        # Downloads (a document's original, the audit CSV) stream: read, not HTML, left out below.
        body = b"".join(response.streaming_content) if response.streaming else response.content
        pages.append(Page(label, response.status_code, dict(response.headers), body.decode(errors="replace")))

    with override_settings(ROOT_URLCONF=__name__):
        response = staff.get("/boom/")
        assert response.status_code == 500
        pages.append(Page("500 page", 500, dict(response.headers), response.content.decode()))
    response = Client(enforce_csrf_checks=True).post("/accounts/login/", {"login": "a@example.com"})
    assert response.status_code == 403
    pages.append(Page("CSRF failure page", 403, dict(response.headers), response.content.decode()))
    viewer = MembershipFactory(organization=owner.organization, role=Membership.Role.VIEWER)
    viewer_client = Client()
    viewer_client.force_login(viewer.user)
    response = viewer_client.get(f"/o/{params['org_slug']}/keys/")
    assert response.status_code == 403
    pages.append(Page("403 page", 403, dict(response.headers), response.content.decode()))

    # Pages: HTML documents (redirects and 405s are text/html too, with no document in them).
    html = [p for p in pages if p.headers.get("Content-Type", "").startswith("text/html") and "<html" in p.html]
    assert len([p for p in html if p.status == 200 and p.label.startswith("owner")]) >= 30
    assert len([p for p in html if p.label.startswith("admin")]) >= 30
    return html


def policy(page: Page) -> dict[str, list[str]]:
    header = page.headers.get("Content-Security-Policy", "")
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


def test_every_html_page_has_a_strict_csp_with_a_fresh_nonce_and_a_permissions_policy():
    problems, nonces = [], []
    for page in every_html_page():
        csp = policy(page)
        expected = {
            "default-src": ["'self'"],
            "img-src": ["'self'", "data:"],
            "connect-src": ["'self'"],
            "object-src": ["'none'"],
            "base-uri": ["'self'"],
            "frame-ancestors": ["'none'"],
            "form-action": ["'self'"],
        }
        for directive, sources in expected.items():
            if csp.get(directive) != sources:
                problems.append(f"{page.label}: {directive} is {csp.get(directive)}")
        for directive in ("script-src", "style-src"):
            sources = csp.get(directive, [])
            unsafe = {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'"} & set(sources)
            if sources[:1] != ["'self'"] or unsafe or any(not NONCE.fullmatch(s) for s in sources[1:]):
                problems.append(f"{page.label}: {directive} is {sources}")
        found = {NONCE.fullmatch(s).group(1) for s in csp.get("script-src", [])[1:] if NONCE.fullmatch(s)}
        # Every page with scripts carries a nonce (our templates put it on every <script>), except the admin's,
        # which run no inline code and so ask for none.
        if "<script" in page.html and not page.label.startswith("admin"):
            if len(found) != 1:
                problems.append(f"{page.label}: no nonce in script-src")
            nonces += found
        permissions = page.headers.get("Permissions-Policy", "")
        for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
            if f"{feature}=()" not in permissions:
                problems.append(f"{page.label}: Permissions-Policy does not deny {feature}: {permissions!r}")
        for header, value in (
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "same-origin"),
            ("X-Frame-Options", "DENY"),
        ):
            if page.headers.get(header) != value:
                problems.append(f"{page.label}: {header} is {page.headers.get(header)!r}")
    assert not problems, "\n".join(problems)
    assert len(nonces) >= 50
    assert len(set(nonces)) == len(nonces), "a nonce was used twice"
    assert all(len(n) >= 22 for n in nonces)  # 16 random bytes, base64


def test_no_page_holds_inline_code_without_the_nonce_handlers_javascript_urls_or_style_attributes():
    problems = []
    for page in every_html_page():
        found = NONCE.search(" ".join(policy(page).get("script-src", [])))
        nonce = found.group(1) if found else None
        soup = BeautifulSoup(page.html, "html.parser")
        for script in soup.find_all("script"):
            inline = not script.get("src")
            if inline and str(script.get("type", "")).lower() in SCRIPT_TYPES and script.get("nonce") != nonce:
                problems.append(f"{page.label}: an inline script without the nonce: {str(script)[:120]}")
            if not inline and re.match(r"^(https?:)?//", str(script["src"])):
                problems.append(f"{page.label}: a script from another origin: {script['src']}")
        for style in soup.find_all("style"):
            if style.get("nonce") != nonce:
                problems.append(f"{page.label}: an inline <style> without the nonce")
        for element in soup.find_all(True):
            for name, value in element.attrs.items():
                text = " ".join(value) if isinstance(value, list) else str(value)
                if name.lower().startswith("on"):
                    problems.append(f"{page.label}: an inline handler <{element.name} {name}={text!r}>")
                if name.lower() == "style":
                    problems.append(f"{page.label}: a style attribute <{element.name} style={text!r}>")
                if re.sub(r"[\s\x00-\x1f]", "", text).lower().startswith("javascript:"):
                    problems.append(f"{page.label}: a javascript: URL <{element.name} {name}={text!r}>")
    assert not problems, "\n".join(problems)


def test_the_browsable_api_is_off():
    owner, _params = _a_team_with_one_of_everything()
    client = Client()
    client.force_login(owner.user)
    response = client.get("/api/v1/me", HTTP_ACCEPT="text/html")
    assert response["Content-Type"] == "application/json"


def test_an_operator_can_collect_reports_or_only_report():
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.CONTENT_SECURITY_POLICY is None, "
        "settings.CONTENT_SECURITY_POLICY_REPORT_ONLY['DIRECTIVES']['report-uri'], "
        "settings.CONTENT_SECURITY_POLICY_REPORT_ONLY['DIRECTIVES']['form-action'])"
    )
    env = subprocess_env(CSP_REPORT_URI="https://csp.example.com/r", CSP_REPORT_ONLY="true")
    env.update(STRIPE_SECRET_KEY="sk_live_x", STRIPE_API_BASE="")
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "True ['https://csp.example.com/r'] [\"'self'\", 'https://checkout.stripe.com', 'https://billing.stripe.com']"
    )
