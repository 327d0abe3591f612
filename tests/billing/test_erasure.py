"""A person who handed their team over and then deleted their account leaves no trace at Stripe or in
dj-stripe's copies: the team's Stripe customer gets the new owner as its contact."""

import json

import pytest
import requests
from django.apps import apps
from djstripe.models import Customer, Invoice, WebhookEventTrigger

from accounts import erasure
from accounts.models import Membership
from accounts.permissions import principal_for_member
from accounts.services import ownership_transfer
from billing import privacy as billing_privacy
from billing.models import OrgBilling
from tests.accounts.factories import MembershipFactory
from tests.billing.test_stripe import _subscribe, local_stripe_key

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


def _stripe_customer(local_stripe, customer_id):
    return requests.get(f"{local_stripe.server.base_url}/v1/customers/{customer_id}", auth=(local_stripe_key(), ""),
                        timeout=10).json()  # fmt: skip


def _djstripe_rows_holding(text: str) -> list[str]:
    found = []
    for model in apps.get_app_config("djstripe").get_models():
        for field in billing_privacy._text_fields(model):
            if model._default_manager.filter(**{f"{field.name}__icontains": text}).exists():
                found.append(f"{model.__name__}.{field.name}")
    return found


def test_a_former_owner_who_deletes_their_account_is_no_longer_the_teams_stripe_contact(client, local_stripe):
    org, _ = _subscribe(client, local_stripe, "pro")
    former = Membership.all_orgs.get(organization=org)
    former.user.first_name, former.user.last_name = "Ada", "Lovelace-Byron"
    former.user.set_password(PASSWORD)
    former.user.save()
    email, full_name = former.user.email, "Ada Lovelace-Byron"
    customer_id = OrgBilling.all_orgs.get(organization=org).stripe_customer_id
    assert _stripe_customer(local_stripe, customer_id)["email"] == email  # Checkout made it with the owner's
    invoice = requests.get(f"{local_stripe.server.base_url}/v1/invoices", params={"customer": customer_id},
                           auth=(local_stripe_key(), ""), timeout=10).json()["data"][0]  # fmt: skip
    local_stripe.deliver(client, local_stripe.event("invoice.paid", dict(invoice, customer_email=email,
                                                                           customer_name=full_name)))  # fmt: skip
    assert Customer.objects.get(id=customer_id).email == email
    assert {"Customer.email", "Invoice.stripe_data", "Event.stripe_data", "WebhookEventTrigger.body"} <= set(
        _djstripe_rows_holding(email)
    )
    assert "Event.stripe_data" in _djstripe_rows_holding(full_name)  # the invoice as the webhook sent it

    successor = MembershipFactory(organization=org, role="admin")
    ownership_transfer(principal=principal_for_member(former), membership_id=successor.pk)
    record = erasure.account_erase_request(user=former.user, password=PASSWORD)
    erasure.erasure_run(record_id=record.pk)

    at_stripe = _stripe_customer(local_stripe, customer_id)
    assert at_stripe["email"] == successor.user.email and at_stripe["name"] == org.name
    assert Customer.objects.get(id=customer_id).email == successor.user.email
    assert Customer.objects.get(id=customer_id).stripe_data["email"] == successor.user.email
    assert _djstripe_rows_holding(email) == [] and _djstripe_rows_holding(full_name) == []
    kept = Invoice.objects.get(customer_id=customer_id)  # the invoice stays, its amounts too
    assert kept.stripe_data["total"] == invoice["total"] and kept.stripe_data["customer_email"] is None
    assert WebhookEventTrigger.objects.exists() and email not in json.dumps(list(
        WebhookEventTrigger.objects.values_list("body", flat=True)))  # fmt: skip


def test_a_customer_no_team_holds_any_more_loses_the_persons_email(client, local_stripe):
    org, _ = _subscribe(client, local_stripe, "team")
    former = Membership.all_orgs.get(organization=org)
    former.user.set_password(PASSWORD)
    former.user.save()
    customer_id = OrgBilling.all_orgs.get(organization=org).stripe_customer_id
    OrgBilling.all_orgs.filter(organization=org).update(stripe_customer_id="")  # as if the team had moved on
    successor = MembershipFactory(organization=org, role="admin")
    ownership_transfer(principal=principal_for_member(former), membership_id=successor.pk)
    record = erasure.account_erase_request(user=former.user, password=PASSWORD)
    erasure.erasure_run(record_id=record.pk)
    assert not _stripe_customer(local_stripe, customer_id).get("email")
    assert _djstripe_rows_holding(former.user.email) == []
