import pytest

from tests.accounts.conftest import issue_key, key_client, make_member  # noqa: F401  (a fixture)
from tests.accounts.factories import OrganizationFactory


@pytest.fixture
def org(db):
    return OrganizationFactory()


@pytest.fixture
def writer(org):
    """An API client with a key that may read and upload."""
    return key_client(issue_key(org, scopes=["read", "ask", "documents:write"]).secret)


from tests.llm.conftest import fake, models  # noqa: E402, F401  (fixtures)
