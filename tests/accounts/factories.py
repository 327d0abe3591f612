import hashlib
import secrets
from datetime import timedelta

import factory
from django.utils import timezone

from accounts.models import ApiKey, AuditEvent, DataExport, Invitation, Membership, Organization, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery staple")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()
            # Sign-in needs a confirmed address (ACCOUNT_EMAIL_VERIFICATION = "mandatory").
            from allauth.account.models import EmailAddress

            EmailAddress.objects.create(user=obj, email=obj.email, verified=True, primary=True)


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class OrgOwnedFactory(factory.django.DjangoModelFactory):
    """Test data is created across orgs on purpose: through the `all_orgs` escape hatch."""

    class Meta:
        abstract = True

    organization = factory.SubFactory(OrganizationFactory)

    @classmethod
    def _get_manager(cls, model_class):
        return model_class.all_orgs


class MembershipFactory(OrgOwnedFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    role = Membership.Role.MEMBER


class InvitationFactory(OrgOwnedFactory):
    class Meta:
        model = Invitation

    email = factory.Sequence(lambda n: f"invitee{n}@example.com")
    role = Membership.Role.MEMBER
    token_hash = factory.LazyFunction(lambda: hashlib.sha256(secrets.token_bytes(16)).hexdigest())
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=72))


class ApiKeyFactory(OrgOwnedFactory):
    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda n: f"key {n}")
    prefix = factory.Sequence(lambda n: f"cdk_live_t{n:07d}")
    secret_hash = factory.LazyFunction(lambda: hashlib.sha256(secrets.token_bytes(16)).hexdigest())
    scopes = factory.LazyFunction(lambda: ["read"])


class AuditEventFactory(OrgOwnedFactory):
    class Meta:
        model = AuditEvent

    action = "test.event"
    actor_label = "system"


class DataExportFactory(factory.django.DjangoModelFactory):
    """An org's export, ready to download (a person's exports have no org)."""

    class Meta:
        model = DataExport

    user = factory.SubFactory(UserFactory)
    kind = DataExport.Kind.ORGANIZATION
    status = DataExport.Status.READY
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=7))
