"""Tenant scoping, as one mechanism.

Every tenant table inherits OrgOwnedModel. Its default manager, `objects`, only ever returns rows of the org
in scope and raises OrgScopeMissing when no org is in scope: forgetting the scope is an error, never a leak.
The scope is entered once at each boundary:

- browser views: OrgMiddleware, from the URL (`/o/<slug>/...`) or the session, after checking membership;
- the API: saas.core.api.OrgScopedAPIView, from the API key (or the session user's current org);
- Celery tasks: `with org_scope(org_id):` as their first line; Channels consumers on connect.

`Model.objects.for_org(org)` names the org explicitly (and refuses a different org than the one in scope).
`Model.all_orgs` is the escape hatch for operators, migrations and cross-org jobs; it stands out in review.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from django.db import models

from saas.core.models import BaseModel

if TYPE_CHECKING:
    from accounts.models import Organization

_current_org_id: ContextVar[UUID | None] = ContextVar("crewdesk_current_org_id", default=None)

M = TypeVar("M", bound=models.Model)


class OrgScopeMissing(RuntimeError):
    """A tenant table was queried with no org in scope."""


class OrgScopeMismatch(RuntimeError):
    """Code asked for one org's rows while another org is in scope."""


def current_org_id() -> UUID | None:
    return _current_org_id.get()


def _org_id(org: "Organization | UUID | str") -> UUID:
    if isinstance(org, UUID):
        return org
    if isinstance(org, str):
        return UUID(org)
    return org.pk


@contextmanager
def org_scope(org: "Organization | UUID | str") -> Iterator[UUID]:
    token = _current_org_id.set(_org_id(org))
    try:
        yield _current_org_id.get()  # type: ignore[misc]
    finally:
        _current_org_id.reset(token)


def enter_org_scope(org: "Organization | UUID | str") -> Any:
    """For boundaries that cannot use a `with` block (DRF's initial/finalize); pair with exit_org_scope."""
    return _current_org_id.set(_org_id(org))


def exit_org_scope(token: Any) -> None:
    _current_org_id.reset(token)


def org_id_for(org: "Organization | UUID | str") -> UUID:
    """The id to filter a hand-written query by, checked as `for_org` checks it: a different org than the one
    in scope is refused."""
    org_id = _org_id(org)
    in_scope = _current_org_id.get()
    if in_scope is not None and in_scope != org_id:
        raise OrgScopeMismatch(f"asked for org {org_id} while org {in_scope} is in scope")
    return org_id


class OrgScopedManager(models.Manager[M], Generic[M]):
    def get_queryset(self) -> models.QuerySet[M]:
        org_id = _current_org_id.get()
        if org_id is None:
            raise OrgScopeMissing(
                f"{self.model.__name__}.objects was queried with no org in scope: "
                f"use org_scope(org), .for_org(org), or {self.model.__name__}.all_orgs deliberately."
            )
        return super().get_queryset().filter(organization_id=org_id)

    def for_org(self, org: "Organization | UUID | str") -> models.QuerySet[M]:
        return super().get_queryset().filter(organization_id=org_id_for(org))


class OrgOwnedModel(BaseModel):
    """A row of customer data: it belongs to exactly one org."""

    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")

    objects: Any = OrgScopedManager()
    all_orgs: Any = models.Manager()

    class Meta:
        abstract = True
        # Following a foreign key or cascading a delete must not depend on the scope.
        base_manager_name = "all_orgs"
