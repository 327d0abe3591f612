"""The providers page under the team's settings: an admin adds the team's own providers (bring your own key),
tests the connection (which lists the upstream's models), chooses the models the team uses, edits or deletes
a provider. Plain forms: no script is needed."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.authentication import request_origin
from accounts.permissions import ADMIN
from accounts.views import OrgHttpRequest, org_page, run_service
from saas.llm import org_providers
from saas.llm.models import ProviderKind
from saas.llm.provider_registry import KEYLESS_KINDS, provider_health

KINDS = [(value, label) for value, label in ProviderKind.choices if value != ProviderKind.LOCAL]
FORM_FIELDS = ("name", "kind", "base_url", "api_key", "api_version", "timeout_seconds")


def _kind_label(kind: str) -> str:
    return str(ProviderKind(kind).label) if kind in ProviderKind.values else kind


def _form_data(request: OrgHttpRequest, fields: tuple[str, ...]) -> dict[str, str]:
    return {name: request.POST[name] for name in fields if name in request.POST}


@org_page(ADMIN)
@require_http_methods(["GET", "POST"])
def provider_list(request: OrgHttpRequest) -> HttpResponse:
    if request.method == "POST":
        origin = request_origin(request)
        row = run_service(request, lambda: org_providers.org_provider_create(
            principal=request.principal, data=_form_data(request, FORM_FIELDS), origin=origin,
        ), "Provider saved. Test the connection, then choose its models.")  # fmt: skip
        if row:
            return redirect("org-provider", org_slug=request.org.slug, provider_id=row.pk)
    rows = [org_providers.org_provider_view(row) for row in org_providers.org_provider_list(org=request.org)]
    return render(request, "llm/providers.html", {
        "providers": rows, "kinds": KINDS, "keyless": sorted(KEYLESS_KINDS), "form": request.POST,
        "operator": [(name, {**h, "kind": _kind_label(h["kind"])}) for name, h in provider_health().items()],
    })  # fmt: skip


@org_page(ADMIN)
def provider_detail(request: OrgHttpRequest, provider_id: str) -> HttpResponse:
    row = org_providers.org_provider_get(org=request.org, provider_id=provider_id)
    view = org_providers.org_provider_view(row)
    listed = {m["id"] for m in view.discovered_models}
    return render(request, "llm/provider_detail.html", {
        "provider": view, "unlisted_models": [m for m in view.models if m["id"] not in listed],
        "tested_at": row.tested_at,
    })  # fmt: skip


@org_page(ADMIN)
@require_POST
def provider_edit(request: OrgHttpRequest, provider_id: str) -> HttpResponse:
    data = _form_data(request, ("name", "base_url", "api_key", "api_version", "timeout_seconds"))
    data["enabled"] = request.POST.get("enabled") == "1"  # type: ignore[assignment]
    origin = request_origin(request)
    run_service(request, lambda: org_providers.org_provider_update(
        principal=request.principal, provider_id=provider_id, data=data, origin=origin), "Saved.")  # fmt: skip
    return redirect("org-provider", org_slug=request.org.slug, provider_id=provider_id)


@org_page(ADMIN)
@require_POST
def provider_test(request: OrgHttpRequest, provider_id: str) -> HttpResponse:
    org_providers.org_provider_get(org=request.org, provider_id=provider_id)
    found = run_service(request, lambda: org_providers.org_provider_test(principal=request.principal,
                                                                         provider_id=provider_id))  # fmt: skip
    if found == []:
        messages.warning(request, "Connected, but the provider lists no models: add them by name below.")
    elif isinstance(found, list):
        messages.success(request, f"Connected: {len(found)} model{'s' if len(found) != 1 else ''} listed.")
    return redirect("org-provider", org_slug=request.org.slug, provider_id=provider_id)


@org_page(ADMIN)
@require_POST
def provider_models(request: OrgHttpRequest, provider_id: str) -> HttpResponse:
    chosen: list[str | dict[str, object]] = list(request.POST.getlist("model"))
    chosen += [line.strip() for line in request.POST.get("extra_models", "").splitlines() if line.strip()]
    origin = request_origin(request)
    run_service(request, lambda: org_providers.org_provider_set_models(
        principal=request.principal, provider_id=provider_id, models=chosen, origin=origin,
    ), "Models saved.")  # fmt: skip
    return redirect("org-provider", org_slug=request.org.slug, provider_id=provider_id)


@org_page(ADMIN)
@require_POST
def provider_delete(request: OrgHttpRequest, provider_id: str) -> HttpResponse:
    origin = request_origin(request)
    deleted = run_service(request, lambda: org_providers.org_provider_delete(
        principal=request.principal, provider_id=provider_id, origin=origin), "Provider deleted.")  # fmt: skip
    if not deleted:
        return redirect("org-provider", org_slug=request.org.slug, provider_id=provider_id)
    return redirect("org-providers", org_slug=request.org.slug)
