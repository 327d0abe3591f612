"""Browser pages for personal data and the org's privacy (GDPR): your data (export, download, delete your
account), the public privacy notice, and the org settings' retention, member-content, export and delete forms.
Thin, as accounts/views.py (whose org_page and run_service they use)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts import erasure, exports, services
from accounts.authentication import CURRENT_ORG_SESSION_KEY, request_origin
from accounts.permissions import ADMIN, OWNER
from accounts.privacy_api import export_file_response
from accounts.views import OrgHttpRequest, org_page, run_service
from saas.core import privacy as privacy_registry
from saas.core.errors import ApplicationError, NotFound


def _origin(request: HttpRequest) -> services.Origin:
    return request_origin(request)


def _to_settings(request: OrgHttpRequest) -> HttpResponse:
    return redirect("org-settings", org_slug=request.org.slug)


# --- Your data ---------------------------------------------------------------------------------------------


@login_required
def account_privacy(request: OrgHttpRequest) -> HttpResponse:
    """Your data: ask for a copy, download it, or delete your account (with what happens in each team)."""
    return render(request, "accounts/privacy.html", {
        "exports": exports.export_list(user=request.user), "preview": erasure.erasure_preview(user=request.user),
        "keep_days": settings.DATA_EXPORT_KEEP_DAYS,
    })  # fmt: skip


@login_required
@require_POST
def account_export(request: OrgHttpRequest) -> HttpResponse:
    exports.export_request(user=request.user, origin=_origin(request))
    messages.success(request, "Your export is being prepared. We will tell you here and by email when it is ready.")
    return redirect("account-privacy")


@login_required
def export_download(request: OrgHttpRequest, export_id: str) -> HttpResponseBase:
    try:
        export = exports.export_download(user=request.user, export_id=export_id, origin=_origin(request))
        return export_file_response(export)  # opens the stored file: a missing or damaged one is said here
    except NotFound as exc:
        raise Http404(exc.message) from exc
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("account-privacy")


@login_required
@require_POST
def account_delete(request: OrgHttpRequest) -> HttpResponse:
    try:
        erasure.account_erase_request(user=request.user, password=request.POST.get("password", ""),
                                      origin=_origin(request))  # fmt: skip
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("account-privacy")
    logout(request)
    return redirect("account-deleted")


def account_deleted(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/deleted.html")


def privacy_notice(request: HttpRequest) -> HttpResponse:
    """What is stored, where and for how long: generated from the stores the code registered and its settings."""
    return render(request, "accounts/privacy_notice.html", {
        "stores": [{"name": s.name, "title": s.title, "what": s.what, "where": s.where, "kept": s.kept_text(),
                    "setting": s.retention_setting} for s in privacy_registry.stores()],
        "notices": privacy_registry.notices(), "keep_days": settings.DATA_EXPORT_KEEP_DAYS,
    })  # fmt: skip


# --- The org's privacy settings ----------------------------------------------------------------------------


@org_page(ADMIN)
@require_POST
def org_retention(request: OrgHttpRequest) -> HttpResponse:
    days = {name: request.POST.get(name, "") for name in services.RETENTION_FIELDS}
    run_service(request, lambda: services.organization_retention_set(
        principal=request.principal, days=days, origin=_origin(request)), "Retention saved.")  # fmt: skip
    return _to_settings(request)


@org_page(ADMIN)
@require_POST
def org_member_content(request: OrgHttpRequest) -> HttpResponse:
    policy = request.POST.get("member_content", "")
    run_service(request, lambda: services.organization_member_content_set(
        principal=request.principal, policy=policy, origin=_origin(request)), "Saved.")  # fmt: skip
    return _to_settings(request)


@org_page(OWNER)
@require_POST
def org_export(request: OrgHttpRequest) -> HttpResponse:
    run_service(request, lambda: exports.organization_export_request(principal=request.principal,
                                                                     origin=_origin(request)),
                "The team's export is being prepared; you will be notified when it is ready.")  # fmt: skip
    return _to_settings(request)


@org_page(OWNER)
@require_POST
def org_delete(request: OrgHttpRequest) -> HttpResponse:
    done = run_service(request, lambda: erasure.organization_erase_request(
        principal=request.principal, confirm=request.POST.get("confirm", ""),
        password=request.POST.get("password", ""), origin=_origin(request)))  # fmt: skip
    if not done:
        return _to_settings(request)
    request.session.pop(CURRENT_ORG_SESSION_KEY, None)
    messages.success(request, f"{request.org.name} is deleted: its data is being erased.")
    return redirect("home")
