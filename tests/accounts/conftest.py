import pytest
from rest_framework.test import APIClient

from accounts import permissions, services
from accounts.models import Membership
from accounts.permissions import Principal
from tests.accounts.factories import MembershipFactory, OrganizationFactory


def issue_key(org, scopes=("read",), name="test key"):
    operator = Principal(organization=org, scopes=permissions.ROLE_SCOPES[Membership.Role.OWNER])
    return services.api_key_create(principal=operator, name=name, scopes=list(scopes))


def key_client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def org(db):
    return OrganizationFactory()


@pytest.fixture
def make_member(db):
    def make(org, role=Membership.Role.MEMBER, **kwargs):
        return MembershipFactory(organization=org, role=role, **kwargs)

    return make


@pytest.fixture
def session_client():
    def make(user) -> APIClient:
        client = APIClient()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def admin_key(org):
    return issue_key(org, scopes=sorted(permissions.KEY_SCOPES), name="admin key")
