"""The notification bell: the unread count on every org page, the dropdown's list, marking one or all read, a
notification that belongs to someone else (another member, another org) is a 404 and stays unread."""

from typing import Any

import pytest

from accounts import services
from accounts.models import Notification
from tests.accounts.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def _count(html: str) -> str:
    start = html.index('id="bell-count"')
    return html[html.index(">", start) + 1 : html.index("</span>", start)]


@pytest.fixture
def team():
    owner: Any = MembershipFactory(role="owner")
    mate: Any = MembershipFactory(organization=owner.organization, role="member")
    services.notify_members(org=owner.organization, title="Scheduled run of Digest finished", url="/o/x/runs/1/")
    services.notify_members(org=owner.organization, title="Your export is ready")
    return owner, mate


def test_the_bell_shows_the_unread_count_on_every_org_page(team, client):
    owner, _ = team
    client.force_login(owner.user)
    for path in ("", "members/", "documents/"):
        html = client.get(f"/o/{owner.organization.slug}/{path}").content.decode()
        assert "Notifications: 2 unread</span>" in html and _count(html) == "2"
    bell = client.get(f"/o/{owner.organization.slug}/notifications/bell/").content.decode()
    assert "Scheduled run of Digest finished" in bell and "Your export is ready" in bell
    # Seeing the Overview no longer marks them read: the bell is where they are read.
    assert Notification.objects.for_org(owner.organization).filter(read_at__isnull=True).count() == 4


def test_mark_one_read_then_all_read_touches_only_the_members_own(team, client):
    owner, mate = team
    org = owner.organization
    client.force_login(owner.user)
    mine = Notification.objects.for_org(org).filter(user=owner.user).order_by("title")
    first = mine[0]
    response = client.post(f"/o/{org.slug}/notifications/{first.pk}/read/", {"next": f"/o/{org.slug}/members/"})
    assert response.status_code == 302 and response["Location"] == f"/o/{org.slug}/members/"
    first.refresh_from_db()
    assert first.read_at is not None
    assert _count(client.get(f"/o/{org.slug}/notifications/bell/").content.decode()) == "1"
    client.post(f"/o/{org.slug}/notifications/read-all/")
    assert not Notification.objects.for_org(org).filter(user=owner.user, read_at__isnull=True).exists()
    assert Notification.objects.for_org(org).filter(user=mate.user, read_at__isnull=True).count() == 2


def test_opening_a_notification_marks_it_read_and_follows_only_a_local_link(team, client):
    owner, _ = team
    org = owner.organization
    client.force_login(owner.user)
    run = Notification.objects.for_org(org).get(user=owner.user, title__startswith="Scheduled")
    response = client.post(f"/o/{org.slug}/notifications/{run.pk}/open/")
    assert response["Location"] == "/o/x/runs/1/"
    evil = Notification.objects.for_org(org).create(organization=org, user=owner.user, title="x",
                                                    url="//evil.example/phish")  # fmt: skip
    response = client.post(f"/o/{org.slug}/notifications/{evil.pk}/open/")
    assert response["Location"] == f"/o/{org.slug}/notifications/"
    response = client.post(f"/o/{org.slug}/notifications/read-all/", {"next": "https://evil.example/"})
    assert response["Location"] == f"/o/{org.slug}/notifications/"


def test_another_members_or_another_orgs_notification_is_a_404_and_stays_unread(team, client):
    owner, mate = team
    elsewhere: Any = MembershipFactory(user=owner.user)  # the same person in another team
    services.notify_members(org=elsewhere.organization, title="Other team's news")
    theirs = Notification.objects.for_org(owner.organization).filter(user=mate.user).first()
    other_org = Notification.objects.for_org(elsewhere.organization).get()
    client.force_login(owner.user)
    slug = owner.organization.slug
    for note in (theirs, other_org):
        assert client.post(f"/o/{slug}/notifications/{note.pk}/read/").status_code == 404
        assert client.post(f"/o/{slug}/notifications/{note.pk}/open/").status_code == 404
        note.refresh_from_db()
        assert note.read_at is None
    # The bell of one team counts that team's notifications only.
    assert _count(client.get(f"/o/{elsewhere.organization.slug}/notifications/bell/").content.decode()) == "1"
    page = client.get(f"/o/{slug}/notifications/").content.decode()
    assert "Other team's news" not in page and "Your export is ready" in page


def test_the_notifications_page_paginates_and_filters_unread(client):
    owner: Any = MembershipFactory(role="owner")
    org = owner.organization
    Notification.objects.for_org(org).bulk_create(
        [Notification(organization=org, user=owner.user, title=f"Note {n:02d}") for n in range(30)]
    )
    client.force_login(owner.user)
    first = client.get(f"/o/{org.slug}/notifications/").content.decode()
    assert "Page 1 of 2" in first and first.count('data-notification="') == 25
    second = client.get(f"/o/{org.slug}/notifications/?page=2").content.decode()
    assert second.count('data-notification="') == 5
    client.post(f"/o/{org.slug}/notifications/read-all/")
    assert "No unread notifications." in client.get(f"/o/{org.slug}/notifications/?show=unread").content.decode()
