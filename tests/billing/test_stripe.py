"""Stripe through dj-stripe, against a local Stripe (localstripe plus our endpoints, over a real socket):
Checkout and the portal for owners only, signed webhooks (refused when the signature is wrong, processed once,
safe out of order), payment failure to past_due and then restriction, and the metered overage report."""

import json
import logging
import uuid
from datetime import timedelta

import pytest
import requests
from django.utils import timezone
from djstripe.models import Customer, Event, Invoice, WebhookEventTrigger

from accounts import erasure
from accounts.models import AuditEvent, Membership
from accounts.permissions import principal_for_member
from billing import payments, selectors
from billing.models import OrgBilling, Plan, UsageEvent, UsageReport
from saas.llm import gateway
from saas.llm.providers import ChatRequest, PaymentOverdue
from tests.accounts.factories import MembershipFactory
from tests.billing.conftest import sign

pytestmark = pytest.mark.django_db


def _subscribe(client, local_stripe, plan_slug="pro"):
    """An owner goes through Checkout and pays; Stripe says so with a signed checkout.session.completed."""
    owner = MembershipFactory(role="owner")
    org = owner.organization
    client.force_login(owner.user)
    response = client.post(f"/o/{org.slug}/billing/checkout", {"plan": plan_slug})
    assert response.status_code == 302 and "/_config/checkout/cs_test_" in response["Location"], response
    paid = requests.post(response["Location"] + "/complete", timeout=10)
    assert paid.status_code == 200, paid.text
    session = paid.json()
    delivered = local_stripe.deliver(client, local_stripe.event("checkout.session.completed", session))
    assert delivered.status_code == 200, delivered.content
    return org, session


def _billing(org) -> OrgBilling:
    return OrgBilling.objects.for_org(org).get()


def _stripe_subscription(local_stripe, subscription_id: str, **change):
    url = f"{local_stripe.server.base_url}/_config/subscriptions/{subscription_id}"
    return requests.post(url, json=change, timeout=10).json()


def test_checkout_puts_the_org_on_the_plan_it_paid_for(client, local_stripe):
    org, session = _subscribe(client, local_stripe, "pro")
    billing = _billing(org)
    assert (billing.plan.slug, billing.status) == ("pro", "active")
    assert billing.stripe_subscription_id == session["subscription"] and billing.stripe_customer_id
    assert billing.current_period_start and billing.current_period_end
    assert billing.current_period_start <= timezone.now() < billing.current_period_end
    usage = client.get("/api/v1/usage", HTTP_X_CREWDESK_ORG=str(org.pk)).json()
    assert (usage["plan"]["slug"], usage["status"], usage["ai_requests"]["included"]) == ("pro", "active", 1000)
    # The session asked for the base price and the metered overage price that stripe_setup linked.
    pro = Plan.objects.get(slug="pro")
    stored = local_stripe.server.checkout_session(session["id"])
    assert [item["price"] for item in stored["line_items"]] == [pro.stripe_price_id, pro.stripe_metered_price_id]
    page = client.get(f"/o/{org.slug}/billing/").content.decode()
    assert "Manage billing" in page and "Pro plan · Active" in page
    actions = list(AuditEvent.objects.for_org(org).order_by("created_at").values_list("action", flat=True))
    assert actions[-2:] == ["billing.checkout_started", "billing.subscription_changed"]


def test_only_owners_manage_billing(client, local_stripe):
    admin = MembershipFactory(role="admin")
    org = admin.organization
    client.force_login(admin.user)
    assert client.post(f"/o/{org.slug}/billing/checkout", {"plan": "pro"}).status_code == 403
    assert client.post(f"/o/{org.slug}/billing/portal").status_code == 403
    assert "cs_test_" not in json.dumps(local_stripe.server.requests())
    assert "Upgrade" not in client.get(f"/o/{org.slug}/billing/").content.decode()


def test_the_portal_opens_for_a_subscribed_org(client, local_stripe):
    org, _ = _subscribe(client, local_stripe)
    response = client.post(f"/o/{org.slug}/billing/portal")
    assert response.status_code == 302 and "/_config/portal/bps_" in response["Location"]


def test_a_webhook_with_a_wrong_or_stale_signature_is_refused_and_nothing_of_it_is_kept(client, local_stripe, caplog):
    owner = MembershipFactory(role="owner")
    marker = "body-marker-4242"
    event = local_stripe.event("customer.subscription.updated", {"id": "sub_x", "object": "subscription",
                                                                 "metadata": {"note": marker}})  # fmt: skip
    caplog.set_level(logging.DEBUG)
    wrong = local_stripe.deliver(client, event, secret="whsec_somebody_else")
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_signature"
    stale = local_stripe.deliver(client, event, at=int(timezone.now().timestamp()) - 3600)
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "invalid_signature"
    forged = client.post(local_stripe.webhook_path, json.dumps(event), content_type="application/json",
                         HTTP_STRIPE_SIGNATURE="t=1,v1=" + "0" * 64)  # fmt: skip
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_signature"
    garbage = client.post(local_stripe.webhook_path, b"\xff\xfe not json", content_type="application/json",
                          HTTP_STRIPE_SIGNATURE="nonsense")  # fmt: skip
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_signature"
    unsigned = client.post(local_stripe.webhook_path, json.dumps(event), content_type="application/json")
    assert unsigned.status_code == 400 and unsigned.json()["error"]["code"] == "invalid_signature"
    elsewhere = client.post(f"/stripe/webhook/{uuid.uuid4()}/", json.dumps(event), content_type="application/json",
                            HTTP_STRIPE_SIGNATURE=sign(json.dumps(event).encode()))  # fmt: skip
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "not_found"
    # Nothing written anywhere: no trigger row (dj-stripe stored every body before), no event, no log of it.
    assert not WebhookEventTrigger.objects.exists() and not Event.objects.exists()
    assert marker not in caplog.text
    assert not OrgBilling.objects.for_org(owner.organization).exists()


def test_a_duplicate_event_is_processed_once(client, local_stripe):
    org, session = _subscribe(client, local_stripe)
    subscription = _stripe_subscription(local_stripe, session["subscription"], status="past_due")
    event = local_stripe.event("customer.subscription.updated", subscription)
    assert local_stripe.deliver(client, event).status_code == 200
    assert _billing(org).status == "past_due"
    # An operator settles it by hand; the same event delivered again must not undo that.
    billing = _billing(org)
    billing.status, billing.past_due_since = "active", None
    billing.save()
    assert local_stripe.deliver(client, event).status_code == 200
    assert _billing(org).status == "active"
    assert Event.objects.filter(id=event["id"]).count() == 1
    assert WebhookEventTrigger.objects.filter(event_id=event["id"]).count() == 2


def test_out_of_order_events_end_in_the_state_stripe_has(client, local_stripe):
    org, session = _subscribe(client, local_stripe)
    created = local_stripe.event("customer.subscription.created", {"id": session["subscription"],
                                 "object": "subscription", "status": "active"}, created=1)  # fmt: skip
    _stripe_subscription(local_stripe, session["subscription"], status="canceled")
    deleted = local_stripe.event("customer.subscription.deleted", {"id": session["subscription"],
                                 "object": "subscription", "status": "canceled"}, created=2)  # fmt: skip
    assert local_stripe.deliver(client, deleted).status_code == 200
    assert local_stripe.deliver(client, created).status_code == 200  # the older event arrives last
    billing = _billing(org)
    assert (billing.status, billing.plan.slug) == ("canceled", "free")
    assert selectors.billing_state(org=org).plan.slug == "free"


def test_an_old_subscription_ending_late_does_not_end_its_replacement(client, local_stripe):
    org, first = _subscribe(client, local_stripe)
    billing = _billing(org)
    # A second subscription (to Team) replaces the first, which Stripe then cancels: events in reverse order.
    team = Plan.objects.get(slug="team")
    second = requests.post(f"{local_stripe.server.base_url}/v1/subscriptions", auth=(local_stripe_key(), ""),
                           data={"customer": billing.stripe_customer_id, "items[0][plan]": team.stripe_price_id},
                           timeout=10).json()  # fmt: skip
    assert local_stripe.deliver(client, local_stripe.event("customer.subscription.created", second)).status_code == 200
    old = _stripe_subscription(local_stripe, first["subscription"], status="canceled")
    assert local_stripe.deliver(client, local_stripe.event("customer.subscription.deleted", old)).status_code == 200
    billing = _billing(org)
    assert (billing.plan.slug, billing.status, billing.stripe_subscription_id) == ("team", "active", second["id"])


def local_stripe_key() -> str:
    from tests.billing.conftest import SECRET_KEY

    return SECRET_KEY


def test_a_failed_payment_is_past_due_then_restricted_after_the_grace_period(client, local_stripe, settings):
    org, session = _subscribe(client, local_stripe)
    caller = gateway.Caller(org=org, feature="chat")
    ask = ChatRequest([{"role": "user", "content": "Hello"}])
    subscription = _stripe_subscription(local_stripe, session["subscription"], status="past_due")
    failed = local_stripe.event("invoice.payment_failed", {"id": subscription["latest_invoice"], "object": "invoice",
                                "subscription": subscription["id"], "customer": subscription["customer"]})  # fmt: skip
    assert local_stripe.deliver(client, failed).status_code == 200, failed
    billing = _billing(org)
    assert billing.status == "past_due" and billing.past_due_since is not None
    assert gateway.chat(caller=caller, model="local", request=ask).text  # within the grace period: still served
    paused_from = (billing.past_due_since + timedelta(days=settings.BILLING_PAST_DUE_GRACE_DAYS)).strftime("%Y-%m-%d")
    assert f"before {paused_from}, or AI requests will pause" in client.get(f"/o/{org.slug}/billing/").content.decode()

    billing.past_due_since = timezone.now() - timedelta(days=settings.BILLING_PAST_DUE_GRACE_DAYS, minutes=1)
    billing.save()
    with pytest.raises(PaymentOverdue) as refused:
        gateway.chat(caller=caller, model="local", request=ask)
    assert refused.value.details["limit"] == "payment_overdue"
    api = client.post("/api/v1/generate", {"prompt": "Hello"}, content_type="application/json",
                      HTTP_X_CREWDESK_ORG=str(org.pk))  # fmt: skip
    assert api.status_code == 402 and api.json()["error"]["code"] == "payment_overdue", api.content

    subscription = _stripe_subscription(local_stripe, session["subscription"], status="active")
    paid = local_stripe.event("invoice.paid", {"id": subscription["latest_invoice"], "object": "invoice",
                              "subscription": subscription["id"], "customer": subscription["customer"]})  # fmt: skip
    assert local_stripe.deliver(client, paid).status_code == 200
    assert (_billing(org).status, _billing(org).past_due_since) == ("active", None)
    assert gateway.chat(caller=caller, model="local", request=ask).text


def _usage(org, count: int, period_start) -> None:
    UsageEvent.objects.for_org(org).bulk_create(
        UsageEvent(organization=org, kind="request", feature="chat", model="local", period_start=period_start)
        for _ in range(count)
    )


def test_the_overage_report_is_idempotent(client, local_stripe):
    org, _ = _subscribe(client, local_stripe)
    period = selectors.billing_state(org=org).period_start
    _usage(org, 1005, period)
    assert payments.overage_report() == {"orgs": 1, "requests": 5}
    assert payments.overage_report() == {"orgs": 0, "requests": 0}  # run twice: reported once
    events = local_stripe.server.meter_events()
    assert [event["payload"]["value"] for event in events] == ["5"]
    assert events[0]["payload"]["stripe_customer_id"] == _billing(org).stripe_customer_id

    _usage(org, 3, period)
    assert payments.overage_report()["requests"] == 3
    assert [event["payload"]["value"] for event in local_stripe.server.meter_events()] == ["5", "3"]


def test_a_report_interrupted_after_sending_is_not_counted_twice(client, local_stripe, monkeypatch):
    org, _ = _subscribe(client, local_stripe)
    period = selectors.billing_state(org=org).period_start
    _usage(org, 1004, period)

    # The process dies after Stripe received the report and before it was marked sent.
    def killed(report):
        raise SystemExit("killed")

    monkeypatch.setattr(payments, "_report_mark_sent", killed)
    with pytest.raises(SystemExit):
        payments.overage_report()
    monkeypatch.undo()
    assert UsageReport.objects.for_org(org).get().pending_requests == 4
    assert payments.overage_report()["requests"] == 4  # resent under the same identifier
    events = local_stripe.server.meter_events()
    assert [event["payload"]["value"] for event in events] == ["4"]
    assert UsageReport.objects.for_org(org).get().reported_requests == 4


def test_without_stripe_the_buttons_say_so(client, settings):
    settings.STRIPE_SECRET_KEY = ""
    owner = MembershipFactory(role="owner")
    client.force_login(owner.user)
    response = client.post(f"/o/{owner.organization.slug}/billing/checkout", {"plan": "pro"}, follow=True)
    assert "Stripe is not configured" in response.content.decode()
    assert payments.overage_report() == {"orgs": 0, "requests": 0}


def test_deleting_an_org_cancels_its_subscription_and_keeps_invoices_without_personal_data(client, local_stripe):
    org, session = _subscribe(client, local_stripe, "pro")
    billing = _billing(org)
    owner = Membership.all_orgs.get(organization=org)
    customer_id, email = billing.stripe_customer_id, owner.user.email
    # The invoice as Stripe sent it (dj-stripe keeps a copy, fed by the webhooks).
    invoice = requests.get(f"{local_stripe.server.base_url}/v1/invoices", params={"customer": customer_id},
                           auth=(local_stripe_key(), ""), timeout=10).json()["data"][0]  # fmt: skip
    local_stripe.deliver(client, local_stripe.event("invoice.paid", dict(invoice, customer_email=email,
                                                                           customer_name=org.name)))  # fmt: skip
    assert Invoice.objects.filter(customer_id=customer_id).exists()
    assert email in json.dumps(Customer.objects.get(id=customer_id).stripe_data)  # before: the owner's address
    assert Event.objects.filter(stripe_data__data__object__customer=customer_id).exists()

    record = erasure.organization_erase_request(principal=principal_for_member(owner), confirm=org.slug,
                                                password="correct horse battery staple")  # fmt: skip
    erasure.erasure_run(record_id=record.pk)

    stripe_subscription = requests.get(f"{local_stripe.server.base_url}/v1/subscriptions/{session['subscription']}",
                                       auth=(local_stripe_key(), ""), timeout=10).json()  # fmt: skip
    assert stripe_subscription["status"] == "canceled"
    gone = requests.get(f"{local_stripe.server.base_url}/v1/customers/{customer_id}", auth=(local_stripe_key(), ""),
                        timeout=10)  # fmt: skip
    assert gone.status_code == 404 or gone.json().get("deleted") is True
    kept = Invoice.objects.get(customer_id=customer_id)  # the amounts the law wants kept
    assert kept.stripe_data["total"] == invoice["total"]
    for row in (kept.stripe_data, Customer.objects.get(id=customer_id).stripe_data):
        assert email not in json.dumps(row) and org.slug not in json.dumps(row) and org.name not in json.dumps(row)
    assert not Event.objects.filter(stripe_data__data__object__customer=customer_id).exists()
    assert not OrgBilling.all_orgs.filter(organization_id=org.pk).exists()
