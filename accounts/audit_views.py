"""The audit log page and its CSV export: filters (action, actor, a range of days), readable action names,
pages of 50. Admins only, the current org's events only."""

from datetime import UTC, datetime, time, timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils import timezone

from accounts import audit, selectors
from accounts.permissions import ADMIN
from accounts.views import OrgHttpRequest, org_page, paginate

AUDIT_PER_PAGE = 50


class AuditFilterForm(forms.Form):
    action = forms.CharField(required=False, max_length=64)
    actor = forms.CharField(required=False, max_length=255)
    since = forms.DateField(required=False, label="From")
    until = forms.DateField(required=False, label="To")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["until"] < data["since"]:
            raise ValidationError("The range ends before it starts.")
        return data

    def filters(self) -> dict[str, Any]:
        """The selector's filters: whole UTC days, the "to" day included."""
        self.is_valid()  # the fields that are valid still filter; the others are shown as errors
        data = getattr(self, "cleaned_data", {})
        since, until = data.get("since"), data.get("until")
        return {
            "action": data.get("action") or None, "actor": data.get("actor") or None,
            "since": datetime.combine(since, time.min, tzinfo=UTC) if since else None,
            "until": datetime.combine(until, time.min, tzinfo=UTC) + timedelta(days=1) if until else None,
        }  # fmt: skip


@org_page(ADMIN)
def audit_log(request: OrgHttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    page, query = paginate(request, selectors.audit_event_list(org=request.org, **form.filters()), AUDIT_PER_PAGE)
    for event in page.object_list:
        event.action_name = audit.action_label(event.action)
    return render(request, "accounts/audit.html", {
        "form": form, "page": page, "query": query,
        "actions": audit.action_choices(selectors.audit_action_names(org=request.org)),
    })  # fmt: skip


@org_page(ADMIN)  # type: ignore[arg-type]  # a streamed response, not an HttpResponse
def audit_export(request: OrgHttpRequest) -> HttpResponseBase:
    """The filtered audit log as CSV (every matching row, streamed), cells neutralised against formulas."""
    form = AuditFilterForm(request.GET or None)
    events = selectors.audit_event_list(org=request.org, **form.filters()).iterator(chunk_size=500)
    response = StreamingHttpResponse(audit.audit_csv_lines(events), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="audit-{request.org.slug}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response
