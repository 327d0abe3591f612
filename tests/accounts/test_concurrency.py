"""Rules that must hold when requests race: real threads, real connections, real row locks."""

import threading

import pytest
from django.db import connection

from accounts import invitations, services
from accounts.models import Membership
from accounts.permissions import principal_for_member
from saas.core.errors import ApplicationError
from tests.accounts.factories import MembershipFactory, OrganizationFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _race(*actions):
    barrier = threading.Barrier(len(actions))
    outcomes: list[object] = [None] * len(actions)

    def run(i, action):
        try:
            barrier.wait()
            outcomes[i] = action()
        except ApplicationError as exc:
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def test_two_owners_demoting_each_other_at_once_leave_one_owner():
    org = OrganizationFactory()
    a = MembershipFactory(organization=org, role="owner")
    b = MembershipFactory(organization=org, role="owner")
    outcomes = _race(
        lambda: services.membership_change_role(principal=principal_for_member(a), membership_id=b.pk, role="admin"),
        lambda: services.membership_change_role(principal=principal_for_member(b), membership_id=a.pk, role="admin"),
    )
    owners = Membership.all_orgs.filter(organization=org, role="owner").count()
    assert owners == 1, outcomes
    assert sum(isinstance(o, ApplicationError) for o in outcomes) == 1


def test_concurrent_invitations_to_one_address_leave_one_open_invitation():
    org = OrganizationFactory()
    admin = MembershipFactory(organization=org, role="admin")
    principal = principal_for_member(admin)
    outcomes = _race(*[
        (lambda: invitations.invitation_create(principal=principal, email="race@example.com", role="member"))
        for _ in range(4)
    ])  # fmt: skip
    from accounts.models import Invitation

    assert Invitation.all_orgs.filter(email="race@example.com", revoked_at__isnull=True).count() == 1
    assert any(not isinstance(o, ApplicationError) for o in outcomes)
