"""The Django admin, as an operator meets it: every registered model's list and one of its rows open (200) for a
superuser, with no org in scope (org-owned models are read through `all_orgs`), and no secret or ciphertext on
any page."""

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db import models
from django.urls import reverse
from django.utils import timezone

from accounts.models import Notification
from billing.models import UsageEvent, UsageReport
from saas.core import crypto
from saas.llm.models import SemanticCacheEntry
from tests.accounts.factories import (
    ApiKeyFactory,
    AuditEventFactory,
    DataExportFactory,
    InvitationFactory,
    MembershipFactory,
    OrganizationFactory,
    UserFactory,
)
from tests.agents.factories import FeedbackFactory, MessageFactory, RunStepFactory
from tests.documents.factories import ChunkFactory
from tests.llm.factories import LLMCallFactory, OrgProviderFactory

pytestmark = pytest.mark.django_db

SECRET_MESSAGE = "the-message-only-its-member-reads"
SECRET_KEY = "sk-factory-key-5678"


def _value(field: models.Field, n: int) -> Any:
    """A valid value for a required field the generic row builder must fill."""
    if field.choices:
        return field.choices[0][0]
    if isinstance(field, models.UUIDField):
        return uuid.uuid4()
    if isinstance(field, models.BooleanField):
        return False
    if isinstance(field, models.DecimalField):
        return Decimal(0)
    if isinstance(field, models.FloatField):
        return 0.0
    if isinstance(field, models.IntegerField):
        return 0
    if isinstance(field, models.DateTimeField):
        return timezone.now()
    if isinstance(field, models.DateField):
        return date.today()
    if isinstance(field, models.DurationField):
        return timedelta(0)
    if isinstance(field, models.JSONField):
        return {}
    if isinstance(field, models.EmailField):
        return f"row{n}@example.com"
    if isinstance(field, models.GenericIPAddressField):
        return "127.0.0.1"
    if isinstance(field, models.URLField):
        return "https://example.com/"
    if isinstance(field, models.CharField | models.TextField):
        return f"row_{n}_{uuid.uuid4().hex[:8]}"[: field.max_length or 40]
    return None


def _any_row(model: type[models.Model], depth: int = 0) -> models.Model:
    """A row of a model no factory covers (dj-stripe's, allauth's): required fields filled with plain values."""
    manager = model._base_manager
    if row := manager.first():
        return row
    assert depth < 4, f"{model._meta.label}: foreign keys nest too deep for the generic row builder"
    kwargs: dict[str, Any] = {}
    for n, field in enumerate(model._meta.concrete_fields):
        if field.primary_key and (field.has_default() or isinstance(field, models.AutoField)):
            continue
        if field.is_relation:
            if not field.null:
                kwargs[field.name] = _any_row(field.related_model, depth + 1)  # type: ignore[arg-type]
            continue
        if field.null or field.has_default() or (field.blank and not field.primary_key):
            continue
        kwargs[field.name] = _value(field, n)
    return manager.create(**kwargs)


def _our_rows() -> None:
    """One realistic row of each of our models, through the factories, with secrets an admin page must not show."""
    org = OrganizationFactory()
    member = MembershipFactory(organization=org)
    InvitationFactory(organization=org)
    key = ApiKeyFactory(organization=org)
    AuditEventFactory(organization=org, actor_api_key=key, actor_user=member.user)
    DataExportFactory(organization=org, user=member.user)
    call = LLMCallFactory(organization=org, api_key=key, user=member.user,
                          input_encrypted=crypto.encrypt(SECRET_MESSAGE))  # fmt: skip
    OrgProviderFactory(organization=org)
    message = MessageFactory(organization=org, content_encrypted=crypto.encrypt(SECRET_MESSAGE), llm_call=call)
    FeedbackFactory(organization=org, message=message, api_key=key)
    RunStepFactory(organization=org, llm_call=call)
    ChunkFactory(organization=org)
    Notification.all_orgs.create(organization=org, user=member.user, title="A run finished")
    UsageEvent.all_orgs.create(organization=org, llm_call=call, kind=UsageEvent.Kind.REQUEST, feature="ask",
                               period_start=timezone.now())  # fmt: skip
    UsageReport.all_orgs.create(organization=org, period_start=timezone.now())
    SemanticCacheEntry.all_orgs.create(organization=org, model_alias="local", prompt_version="1", scope="s",
                                       embedding=[0.1] * 384, answer_encrypted=crypto.encrypt(SECRET_MESSAGE),
                                       expires_at=timezone.now() + timedelta(days=1))  # fmt: skip


@pytest.fixture
def operator(client):
    _our_rows()
    superuser = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(superuser)
    return client


REGISTERED = sorted(admin.site._registry, key=lambda m: m._meta.label)


@pytest.mark.parametrize("model", REGISTERED, ids=[m._meta.label for m in REGISTERED])
def test_every_registered_model_lists_and_opens(operator, model):
    row = _any_row(model)
    opts = model._meta
    listing = operator.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert listing.status_code == 200, listing.content[:2000]
    detail = operator.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(row.pk)]))
    assert detail.status_code == 200, detail.content[:2000]
    for page in (listing, detail):
        body = page.content.decode()
        assert SECRET_MESSAGE not in body
        assert SECRET_KEY not in body
        assert "gAAAA" not in body  # no Fernet ciphertext


@pytest.mark.parametrize(
    "label",
    [
        "documents.Document",
        "documents.Collection",
        "agents.Crew",
        "agents.Run",
        "agents.Conversation",
        "agents.Message",
        "billing.UsageEvent",
    ],
)
def test_the_workspace_is_in_the_admin(label):
    assert label in {m._meta.label for m in admin.site._registry}


def test_dj_stripe_is_listed_after_our_apps(operator):
    index = operator.get(reverse("admin:index"))
    assert index.status_code == 200
    labels = [app["app_label"] for app in index.context["app_list"]]
    assert labels[-1] == "djstripe", labels
    assert labels.index("accounts") < labels.index("djstripe")
