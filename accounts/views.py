"""Browser pages for orgs: new org, settings, members and invitations, API keys; and the helpers every app's
org pages use (org_page, run_service, paginate). The audit log, the notification bell and the privacy pages are
accounts/audit_views.py, bell_views.py and privacy_views.py.

Thin: OrgMiddleware has already resolved request.org and request.principal for every /o/<org_slug>/ page;
views check the scope they need, call a service or selector, and render.
"""

import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts import exports, invitations, key_guard, selectors, services
from accounts.authentication import CURRENT_ORG_SESSION_KEY, request_origin
from accounts.models import ApiKey, MemberContent, Membership, Organization, User
from accounts.permissions import ADMIN, OWNER, READ, Principal
from saas.core.errors import ApplicationError, NotFound
from saas.core.validators import validate_single_line

ViewFunc = Callable[..., HttpResponse]


class OrgHttpRequest(HttpRequest):
    """What OrgMiddleware and login_required guarantee to org pages."""

    user: User  # type: ignore[assignment]
    org: Organization
    membership: Membership
    principal: Principal


def _origin(request: HttpRequest) -> services.Origin:
    return request_origin(request)


def org_page(scope: str) -> Callable[[ViewFunc], ViewFunc]:
    """For /o/<org_slug>/ pages: the principal must hold `scope` in the org (a 403 page otherwise; the org
    itself is the user's own, so saying it exists leaks nothing)."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        @login_required
        def wrapper(request: OrgHttpRequest, org_slug: str, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.principal.has(scope):
                return render(request, "403.html", {"needed": scope}, status=403)
            try:
                return view(request, *args, **kwargs)
            except NotFound as exc:
                raise Http404(exc.message) from exc

        return wrapper

    return decorator


def _back(request: OrgHttpRequest, page: str) -> HttpResponse:
    return redirect(page, org_slug=request.org.slug)


def run_service(request: OrgHttpRequest, action: Callable[[], Any], success: str | None = None) -> Any:
    """Call a service; its errors become a message on the next page instead of an error page."""
    try:
        result = action()
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return None
    except ValidationError as exc:  # a shared validator (saas.core.validators) refused the input
        messages.error(request, " ".join(exc.messages))
        return None
    if success:
        messages.success(request, success)
    return result if result is not None else True


# --- Forms -------------------------------------------------------------------------------------------------


class OrgForm(forms.Form):
    name = forms.CharField(max_length=120, validators=[validate_single_line])


class NewOrgForm(OrgForm):
    slug = forms.SlugField(max_length=50, required=False, help_text="Optional; derived from the name if empty.")


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class OnceForm(forms.Form):
    """A form whose result must not happen twice (a reload re-posts it): it carries a single-use nonce."""

    nonce = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["nonce"] = secrets.token_urlsafe(24)

    def first_submission(self, target: str = "") -> bool:
        return bool(cache.add(f"form-nonce:{self.cleaned_data['nonce']}:{target}", 1, timeout=24 * 3600))


class ApiKeyForm(OnceForm):
    name = forms.CharField(max_length=100, validators=[validate_single_line])
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[ApiKey.Scope.READ]
    )
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, help_text="Leave empty for a key that does not expire."
    )


class RotateForm(OnceForm):
    grace_hours = forms.IntegerField(min_value=0, max_value=168, initial=24)


class TransferForm(forms.Form):
    member_id = forms.UUIDField()


class SearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, strip=True)
    role = forms.ChoiceField(required=False, choices=[("", "Any role"), *Membership.Role.choices])


def paginate(request: HttpRequest, rows: Any, per_page: int) -> tuple[Any, str]:
    """A page of `rows` (?page=N, out of range: the last page) and the query string the pager links keep."""
    page = Paginator(rows, per_page).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return page, query.urlencode()


# --- Pages -------------------------------------------------------------------------------------------------


@login_required
def home(request: OrgHttpRequest) -> HttpResponse:
    """`/`: the org opened last, else the first one, else the page to create one."""
    remembered = request.session.get(CURRENT_ORG_SESSION_KEY)
    membership = remembered and selectors.membership_get_for_user(user=request.user, org_id=remembered)
    membership = membership or selectors.membership_get_for_user(user=request.user)
    if membership is None:
        return redirect("org-new")
    return redirect("org-dashboard", org_slug=membership.organization.slug)


@login_required
@require_http_methods(["GET", "POST"])
def org_new(request: OrgHttpRequest) -> HttpResponse:
    form = NewOrgForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        org = run_service(
            request,
            lambda: services.organization_create(
                name=form.cleaned_data["name"],
                owner=request.user,
                slug=form.cleaned_data["slug"] or None,
                origin=_origin(request),
            ),
        )
        if org:
            request.session[CURRENT_ORG_SESSION_KEY] = str(org.pk)
            return redirect("org-dashboard", org_slug=org.slug)
    return render(request, "accounts/org_new.html", {"form": form})


@org_page(READ)
@require_http_methods(["GET", "POST"])
def org_settings(request: OrgHttpRequest) -> HttpResponse:
    principal = request.principal
    form = OrgForm(request.POST or None, initial={"name": request.org.name})
    if request.method == "POST":
        if not principal.has(ADMIN):
            return render(request, "403.html", {"needed": ADMIN}, status=403)
        if form.is_valid():
            name = form.cleaned_data["name"]
            run_service(
                request,
                lambda: services.organization_update(principal=principal, name=name, origin=_origin(request)),
                "Saved.",
            )
            return _back(request, "org-settings")
    others = [m for m in selectors.member_list(org=request.org) if m.user_id != request.user.pk]
    org_exports = exports.org_export_list(principal=principal) if principal.has(OWNER) else []
    return render(request, "accounts/settings.html", {
        "form": form, "others": others, "exports": org_exports, "member_content_choices": MemberContent.choices,
        "export_keep_days": settings.DATA_EXPORT_KEEP_DAYS,
    })  # fmt: skip


@org_page(OWNER)
@require_POST
def transfer_ownership(request: OrgHttpRequest) -> HttpResponse:
    form = TransferForm(request.POST)
    if form.is_valid():
        member_id = form.cleaned_data["member_id"]
        run_service(
            request,
            lambda: services.ownership_transfer(
                principal=request.principal, membership_id=member_id, origin=_origin(request)
            ),
            "Ownership transferred. You are now an admin.",
        )
    return _back(request, "org-settings")


@org_page(READ)
@require_POST
def leave_org(request: OrgHttpRequest) -> HttpResponse:
    done = run_service(
        request,
        lambda: services.membership_remove(
            principal=request.principal,
            membership_id=request.membership.pk,
            origin=_origin(request),
        ),
    )
    if done:
        request.session.pop(CURRENT_ORG_SESSION_KEY, None)
        messages.success(request, f"You left {request.org.name}.")
        return redirect("home")
    return _back(request, "org-settings")


MEMBERS_PER_PAGE = 25
KEYS_PER_PAGE = 25


@org_page(READ)
def members(request: OrgHttpRequest) -> HttpResponse:
    org = request.org
    can_admin = request.principal.has(ADMIN)
    search = SearchForm(request.GET)
    found = search.cleaned_data if search.is_valid() else {}
    rows = selectors.member_list(org=org, search=found.get("q", ""), role=found.get("role", ""))
    page, query = paginate(request, rows, MEMBERS_PER_PAGE)
    return render(request, "accounts/members.html", {
        "page": page, "query": query, "search": search, "filtered": bool(found.get("q") or found.get("role")),
        "invitations": selectors.invitation_list(org=org, open_only=True) if can_admin else [],
        "invite_form": InviteForm(), "roles": Membership.Role.choices,
    })  # fmt: skip


@org_page(ADMIN)
@require_POST
def invite(request: OrgHttpRequest) -> HttpResponse:
    form = InviteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter a valid email address and role.")
        return _back(request, "org-members")
    email, role = form.cleaned_data["email"], form.cleaned_data["role"]
    run_service(
        request,
        lambda: invitations.invitation_create(
            principal=request.principal, email=email, role=role, origin=_origin(request)
        ),
        f"Invitation sent to {email}.",
    )
    return _back(request, "org-members")


@org_page(ADMIN)
@require_POST
def invitation_revoke(request: OrgHttpRequest, invitation_id: str) -> HttpResponse:
    run_service(
        request,
        lambda: invitations.invitation_revoke(
            principal=request.principal, invitation_id=invitation_id, origin=_origin(request)
        ),
        "Invitation withdrawn.",
    )
    return _back(request, "org-members")


@org_page(ADMIN)
@require_POST
def member_role(request: OrgHttpRequest, member_id: str) -> HttpResponse:
    form = RoleForm(request.POST)
    if form.is_valid():
        role = form.cleaned_data["role"]
        run_service(
            request,
            lambda: services.membership_change_role(
                principal=request.principal,
                membership_id=member_id,
                role=role,
                origin=_origin(request),
            ),
            "Role updated.",
        )
    return _back(request, "org-members")


@org_page(ADMIN)
@require_POST
def member_remove(request: OrgHttpRequest, member_id: str) -> HttpResponse:
    run_service(
        request,
        lambda: services.membership_remove(
            principal=request.principal, membership_id=member_id, origin=_origin(request)
        ),
        "Member removed.",
    )
    return _back(request, "org-members")


@org_page(ADMIN)
@require_http_methods(["GET", "POST"])
def api_keys(request: OrgHttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    issued = None
    if request.method == "POST" and form.is_valid():
        if not form.first_submission():
            messages.info(request, "That key was already created; its secret was shown once, when it was made.")
            return _back(request, "org-api-keys")
        days = form.cleaned_data["expires_in_days"]
        issued = run_service(
            request,
            lambda: services.api_key_create(
                principal=request.principal,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                origin=_origin(request),
            ),
        )
        if issued:
            form = ApiKeyForm()
    return _keys_page(request, form, issued)


def _keys_page(request: OrgHttpRequest, form: ApiKeyForm, issued: Any) -> HttpResponse:
    # A new key is rendered in this response only: it is stored nowhere we could show it again.
    search = SearchForm(request.GET)
    q = search.cleaned_data.get("q", "") if search.is_valid() else ""
    page, query = paginate(request, selectors.api_key_list(org=request.org, search=q), KEYS_PER_PAGE)
    context = {"form": form, "page": page, "query": query, "q": q, "issued": issued, "rotate_form": RotateForm(),
               "has_keys": bool(q) or page.paginator.count > 0, "api_url": settings.API_URL}  # fmt: skip
    return render(request, "accounts/api_keys.html", context)


@org_page(ADMIN)
@require_POST
def api_key_revoke(request: OrgHttpRequest, key_id: str) -> HttpResponse:
    run_service(
        request,
        lambda: services.api_key_revoke(principal=request.principal, key_id=key_id, origin=_origin(request)),
        "Key revoked.",
    )
    return _back(request, "org-api-keys")


@org_page(ADMIN)
@require_POST
def api_key_rotate(request: OrgHttpRequest, key_id: str) -> HttpResponse:
    form = RotateForm(request.POST)
    issued = None
    if form.is_valid():
        if not form.first_submission(target=key_id):
            messages.info(request, "That key was already rotated; the new secret was shown once.")
            return _back(request, "org-api-keys")
        grace = timedelta(hours=form.cleaned_data["grace_hours"])
        issued = run_service(
            request,
            lambda: services.api_key_rotate(
                principal=request.principal, key_id=key_id, grace=grace, origin=_origin(request)
            ),
        )
    if not issued:
        return _back(request, "org-api-keys")
    return _keys_page(request, ApiKeyForm(), issued)


@org_page(ADMIN)
@require_POST
def api_key_networks(request: OrgHttpRequest, key_id: str) -> HttpResponse:
    """The networks a key may be used from: CIDRs separated by commas, spaces or lines; empty for anywhere."""
    networks = request.POST.get("allowed_networks", "").replace(",", " ").split()
    run_service(
        request,
        lambda: key_guard.api_key_networks_set(
            principal=request.principal, key_id=key_id, networks=networks, origin=_origin(request)
        ),
        "Allowed networks saved.",
    )
    return _back(request, "org-api-keys")


@require_http_methods(["GET", "POST"])
def invitation_accept(request: OrgHttpRequest, token: str) -> HttpResponse:
    """Open to anyone holding the link: it shows what the invitation is; accepting needs the invited account."""
    try:
        invitation = invitations.invitation_get_by_token(token=token)
        invitations.invitation_check_open(invitation)
    except ApplicationError as exc:
        return render(request, "accounts/invitation.html", {"error": exc.message}, status=exc.status)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect(f"/accounts/login/?next={request.path}")
        try:
            membership = invitations.invitation_accept(token=token, user=request.user, origin=_origin(request))
        except ApplicationError as exc:
            return render(
                request,
                "accounts/invitation.html",
                {"invitation": invitation, "error": exc.message},
                status=exc.status,
            )
        messages.success(request, f"Welcome to {membership.organization.name}.")
        return redirect("org-dashboard", org_slug=membership.organization.slug)
    return render(request, "accounts/invitation.html", {"invitation": invitation, "next": request.path})
