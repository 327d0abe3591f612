"""The notification bell's pages: the list, the bell's own fragment (refreshed live by static/js/bell.js), and
marking notifications read. A member's own notifications in the current org only: any other id is a 404."""

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts import notifications
from accounts.permissions import READ
from accounts.views import OrgHttpRequest, org_page

PAGE_SIZE = 25


def _back(request: OrgHttpRequest) -> HttpResponse:
    """To the page the form was on (a path on this site), else the notifications page."""
    target = request.POST.get("next", "")
    if target.startswith("/") and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect("notifications", org_slug=request.org.slug)


@org_page(READ)
def notification_list(request: OrgHttpRequest) -> HttpResponse:
    unread_only = request.GET.get("show") == "unread"
    rows = notifications.notification_queryset(org=request.org, user=request.user, unread_only=unread_only)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "accounts/notifications.html", {
        "page": page, "unread_only": unread_only, "query": "show=unread" if unread_only else "",
        "unread": notifications.notification_unread_count(org=request.org, user=request.user),
    })  # fmt: skip


@org_page(READ)
def bell(request: OrgHttpRequest) -> HttpResponse:
    """The bell's inside (count and latest), for the live refresh; `next` is the page it is shown on."""
    shown_on = request.GET.get("next", "")
    context = {
        "bell": notifications.notification_bell(org=request.org, user=request.user),
        "bell_next": shown_on if notifications.safe_target(shown_on) else "",
    }
    response = render(request, "accounts/_bell_inner.html", context)
    response["Cache-Control"] = "no-store"
    return response


@org_page(READ)
@require_POST
def notification_open(request: OrgHttpRequest, notification_id: str) -> HttpResponse:
    note = notifications.notification_mark_read(org=request.org, user=request.user, notification_id=notification_id)
    target = notifications.safe_target(note.url)
    return redirect(target) if target else redirect("notifications", org_slug=request.org.slug)


@org_page(READ)
@require_POST
def notification_read(request: OrgHttpRequest, notification_id: str) -> HttpResponse:
    notifications.notification_mark_read(org=request.org, user=request.user, notification_id=notification_id)
    return _back(request)


@org_page(READ)
@require_POST
def notifications_read_all(request: OrgHttpRequest) -> HttpResponse:
    notifications.notifications_mark_all_read(org=request.org, user=request.user)
    return _back(request)
