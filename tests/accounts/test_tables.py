"""Members, API keys and the audit log at scale: search, server-side pages, the audit log's range of days and
readable action names, and its CSV export (filtered, org-scoped, admins only, safe to open in a spreadsheet)."""

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from accounts import audit
from accounts.models import AuditEvent
from tests.accounts.conftest import issue_key
from tests.accounts.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client):
    membership: Any = MembershipFactory(role="admin")
    client.force_login(membership.user)
    return membership


def _rows(html: str, marker: str) -> int:
    return html.count(marker)


def test_members_are_searched_filtered_by_role_and_paginated(admin, client):
    org = admin.organization
    for n in range(30):
        MembershipFactory(organization=org, user=UserFactory(email=f"crew{n:02d}@northwind.example"),
                          role="viewer" if n % 3 == 0 else "member")  # fmt: skip
    MembershipFactory(user=UserFactory(email="crew99@northwind.example"))  # another team's
    first = client.get(f"/o/{org.slug}/members/").content.decode()
    assert _rows(first, "<tr data-member=") == 25 and "Page 1 of 2 · 31 in all" in first
    second = client.get(f"/o/{org.slug}/members/?page=2").content.decode()
    assert _rows(second, "<tr data-member=") == 6
    found = client.get(f"/o/{org.slug}/members/?q=CREW1").content.decode()
    assert _rows(found, "<tr data-member=") == 10 and "crew99" not in found
    viewers = client.get(f"/o/{org.slug}/members/?role=viewer").content.decode()
    assert _rows(viewers, "<tr data-member=") == 10
    both = client.get(f"/o/{org.slug}/members/?q=crew0&role=viewer&page=1").content.decode()
    assert _rows(both, "<tr data-member=") == 4  # crew00, 03, 06, 09
    assert "No member matches." in client.get(f"/o/{org.slug}/members/?q=nobody").content.decode()
    assert client.get(f"/o/{org.slug}/members/?page=999").status_code == 200  # the last page


def test_api_keys_are_searched_and_paginated(admin, client):
    org = admin.organization
    for n in range(27):
        issue_key(org, name=f"{'deploy' if n < 5 else 'script'} {n}")
    issue_key(MembershipFactory().organization, name="deploy elsewhere")
    first = client.get(f"/o/{org.slug}/keys/").content.decode()
    assert first.count("<td><code>") == 25 and "Page 1 of 2 · 27 in all" in first
    found = client.get(f"/o/{org.slug}/keys/?q=deploy").content.decode()
    assert found.count("<td><code>") == 5 and "elsewhere" not in found
    assert "No key matches" in client.get(f"/o/{org.slug}/keys/?q=zzz").content.decode()


def _event(org, action: str, when: datetime, **fields: Any) -> AuditEvent:
    """An event at `when` (the table is append-only: backdating it takes the maintenance switch, for this
    test's transaction only)."""
    event = AuditEvent.all_orgs.create(organization=org, action=action, **fields)
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('crewdesk.audit_maintenance', 'on', true)")
    AuditEvent.all_orgs.filter(pk=event.pk).update(created_at=when)
    return event


def test_the_audit_log_filters_by_a_range_of_days_and_names_actions_in_words(admin, client):
    org = admin.organization
    _event(org, "api_key.rotated", datetime(2026, 3, 1, 23, 59, tzinfo=UTC), actor_label="ana@example.com")
    _event(org, "api_key.created", datetime(2026, 3, 2, 0, 0, tzinfo=UTC), actor_label="ana@example.com")
    _event(org, "member.removed", datetime(2026, 3, 3, 12, 0, tzinfo=UTC), actor_label="bo@example.com")
    html = client.get(f"/o/{org.slug}/audit/?since=2026-03-02&until=2026-03-03").content.decode()
    page = html.split('<table id="audit-table">')[1]
    assert "API key created" in page and "Member removed" in page and "API key rotated" not in page
    assert '<option value="api_key.rotated">API key rotated</option>' in html  # the filter, in words too
    only_day = client.get(f"/o/{org.slug}/audit/?since=2026-03-01&until=2026-03-01").content.decode()
    assert "API key rotated" in only_day and "API key created" not in only_day.split("<tbody>")[1]
    reversed_range = client.get(f"/o/{org.slug}/audit/?since=2026-03-03&until=2026-03-01").content.decode()
    assert "The range ends before it starts." in reversed_range
    assert "Date: Enter a valid date." not in reversed_range
    bad = client.get(f"/o/{org.slug}/audit/?since=yesterday").content.decode()
    assert "Enter a valid date." in bad


def test_readable_action_names():
    assert audit.action_label("api_key.rotated") == "API key rotated"
    assert audit.action_label("org.something_new") == "Team something new"


def _csv(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_csv_export_has_the_filtered_rows_of_this_org_only(admin, client):
    org = admin.organization
    _event(org, "api_key.created", datetime(2026, 3, 2, 9, 0, tzinfo=UTC), actor_label="ana@example.com",
           target_label="CI")  # fmt: skip
    _event(org, "member.removed", datetime(2026, 3, 2, 10, 0, tzinfo=UTC), actor_label="bo@example.com")
    _event(org, "api_key.revoked", datetime(2026, 4, 2, 10, 0, tzinfo=UTC), actor_label="ana@example.com")
    _event(MembershipFactory().organization, "api_key.created", datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    response = client.get(f"/o/{org.slug}/audit/export.csv?action=api_key.&since=2026-03-01&until=2026-03-31")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith(f'attachment; filename="audit-{org.slug}-')
    rows = _csv(response)
    assert rows[0] == audit.CSV_HEADER
    assert rows[1:] == [["2026-03-02 09:00:00", "api_key.created", "API key created", "ana@example.com",
                         "", "CI", "", ""]]  # fmt: skip


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(admin, client):
    org = admin.organization
    hostile = ['=HYPERLINK("http://evil.example","click")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", 'plain, "quoted"']
    for n, label in enumerate(hostile):
        _event(org, "org.settings_changed", datetime(2026, 3, 2, 9, n, tzinfo=UTC), actor_label=label,
               target_label=label)  # fmt: skip
    rows = _csv(client.get(f"/o/{org.slug}/audit/export.csv?since=2026-03-02&until=2026-03-02"))  # (not the sign-in)
    actors = [row[3] for row in rows[1:]]
    targets = [row[5] for row in rows[1:]]
    expected = [
        'plain, "quoted"',
        "'\t=1",
        "'@SUM(A1)",
        "'-2+3",
        "'+1+1",
        '\'=HYPERLINK("http://evil.example","click")',
    ]
    assert actors == targets == expected


def test_only_admins_export_the_audit_log_and_never_another_orgs(client):
    member: Any = MembershipFactory(role="member")
    client.force_login(member.user)
    assert client.get(f"/o/{member.organization.slug}/audit/export.csv").status_code == 403
    stranger: Any = MembershipFactory(role="owner")
    assert client.get(f"/o/{stranger.organization.slug}/audit/export.csv").status_code == 404
