import secrets
from dataclasses import dataclass

from django.db import transaction
from django.utils.text import slugify

from accounts.models import Membership, Organization, User
from saas.core.errors import Conflict


@transaction.atomic
def user_create(*, email: str, password: str | None) -> User:
    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(email__iexact=email).exists():
        raise Conflict("A user with this email address already exists.", code="email_taken")
    return User.objects.create_user(email=email, password=password)


@transaction.atomic
def organization_create(*, name: str, owner: User, slug: str | None = None) -> Organization:
    slug = slug or slugify(name)[:50] or "org"
    if Organization.objects.filter(slug=slug).exists():
        raise Conflict(f"The slug {slug!r} is taken.", code="slug_taken", details={"slug": slug})
    org = Organization.objects.create(name=name, slug=slug)
    Membership.objects.create(organization=org, user=owner, role=Membership.Role.OWNER)
    return org


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str | None  # None when the demo user already existed: its password was printed back then
    org_slug: str


DEMO_EMAIL = "demo@crewdesk.local"
DEMO_ORG_SLUG = "demo"


@transaction.atomic
def demo_bootstrap() -> DemoLogin:
    """The demo user and org of `make run`; idempotent, and the password is only ever shown on creation."""
    user = User.objects.filter(email=DEMO_EMAIL).first()
    password = None
    if user is None:
        password = secrets.token_urlsafe(12)
        user = user_create(email=DEMO_EMAIL, password=password)
    if not Organization.objects.filter(slug=DEMO_ORG_SLUG).exists():
        organization_create(name="Demo team", owner=user, slug=DEMO_ORG_SLUG)
    return DemoLogin(email=DEMO_EMAIL, password=password, org_slug=DEMO_ORG_SLUG)
