"""Who may do what, in one table. A principal (a member through the browser or the session API, or an API key)
holds a set of scopes; every action names the scope it needs.

API keys hold the scopes they were given. Members hold the scopes of their role. Only owners hold OWNER
(billing, deleting the org, transferring ownership), and no key ever does.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from accounts.models import ApiKey, Membership
from saas.core.errors import PermissionDenied

if TYPE_CHECKING:
    from accounts.models import Organization, User

READ = ApiKey.Scope.READ.value
ASK = ApiKey.Scope.ASK.value
DOCUMENTS_WRITE = ApiKey.Scope.DOCUMENTS_WRITE.value
CREWS_RUN = ApiKey.Scope.CREWS_RUN.value
ADMIN = ApiKey.Scope.ADMIN.value
OWNER = "owner"

KEY_SCOPES: frozenset[str] = frozenset(ApiKey.Scope.values)

ROLE_SCOPES: dict[str, frozenset[str]] = {
    Membership.Role.OWNER: frozenset({READ, ASK, DOCUMENTS_WRITE, CREWS_RUN, ADMIN, OWNER}),
    Membership.Role.ADMIN: frozenset({READ, ASK, DOCUMENTS_WRITE, CREWS_RUN, ADMIN}),
    Membership.Role.MEMBER: frozenset({READ, ASK, DOCUMENTS_WRITE, CREWS_RUN}),
    Membership.Role.VIEWER: frozenset({READ}),
}

# Roles in decreasing power; an actor may only grant roles at or below their own, and only owners grant owner.
ROLE_ORDER = [Membership.Role.OWNER, Membership.Role.ADMIN, Membership.Role.MEMBER, Membership.Role.VIEWER]


@dataclass(frozen=True)
class Principal:
    """Who is acting in an org: a member, or an org API key."""

    organization: "Organization"
    scopes: frozenset[str]
    user: "User | None" = None
    membership: Membership | None = None
    api_key: ApiKey | None = None

    @property
    def role(self) -> str | None:
        return self.membership.role if self.membership else None

    @property
    def label(self) -> str:
        if self.api_key is not None:
            return f"API key {self.api_key.prefix}"
        return self.user.email if self.user else "system"

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(
                f"This action needs the {scope!r} permission.",
                code="missing_scope" if self.api_key else "insufficient_role",
                details={"required": scope},
            )


def require_ask(principal: Principal) -> None:
    """A live channel's ask (chat, the ask page): a member whose role cannot ask hears it in these words."""
    if not principal.has(ASK):
        raise PermissionDenied("Your role in this team cannot ask questions.", code="insufficient_role")


def principal_for_member(membership: Membership) -> Principal:
    return Principal(
        organization=membership.organization,
        scopes=ROLE_SCOPES[membership.role],
        user=membership.user,
        membership=membership,
    )


def principal_for_key(api_key: ApiKey) -> Principal:
    return Principal(organization=api_key.organization, scopes=frozenset(api_key.scopes) & KEY_SCOPES, api_key=api_key)


def can_grant(principal: Principal, role: str) -> bool:
    if role == Membership.Role.OWNER:
        return principal.has(OWNER)
    return principal.has(ADMIN)
