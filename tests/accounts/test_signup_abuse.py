"""Sign-up abuse: disposable addresses refused (unless an operator allows the domain), per-address and
site-wide sign-up throttles; every refusal logged and counted (issue #14)."""

import logging

import pytest
from django.core.cache import cache
from django.test import Client
from prometheus_client import REGISTRY

from accounts.models import User

pytestmark = pytest.mark.django_db
PASSPHRASE = "an-excellent-passphrase"


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()
    yield
    cache.clear()


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("crewdesk_signups_refused_total", {"reason": reason}) or 0.0


def _sign_up(email, ip="192.0.2.1"):
    data = {"email": email, "password1": PASSPHRASE, "password2": PASSPHRASE}
    return Client().post("/accounts/signup/", data, REMOTE_ADDR=ip)


def test_a_disposable_address_is_refused_with_a_clear_error(caplog):
    before = _refused("disposable_email")
    with caplog.at_level(logging.WARNING, logger="accounts.adapter"):
        response = _sign_up("throwaway@mailinator.com")
        subdomain = _sign_up("x@mx.mailinator.com", ip="192.0.2.9")
    assert response.status_code == subdomain.status_code == 200
    assert "disposable email services cannot be used" in response.content.decode()
    assert not User.objects.filter(email__in=["throwaway@mailinator.com", "x@mx.mailinator.com"]).exists()
    assert _refused("disposable_email") == before + 2
    record = next(r for r in caplog.records if r.getMessage() == "signup refused")
    assert record.reason == "disposable_email" and record.email_domain == "mailinator.com"
    assert "throwaway" not in record.getMessage() + str(record.__dict__)


def test_an_operator_can_let_a_disposable_domain_through(settings):
    settings.SIGNUP_ALLOWED_DISPOSABLE_DOMAINS = ["mailinator.com"]
    assert _sign_up("qa@mailinator.com").status_code == 302
    assert User.objects.filter(email="qa@mailinator.com").exists()


def test_sign_ups_are_limited_per_client_address(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "auth_ip": "1000/minute", "signup_ip": "2/hour"}
    before = _refused("rate_limited")
    statuses = [_sign_up(f"bulk{i}@example.com", ip="198.51.100.5").status_code for i in range(3)]
    assert statuses == [302, 302, 429]
    assert User.objects.filter(email__startswith="bulk").count() == 2
    assert _refused("rate_limited") == before + 1
    assert _sign_up("neighbour@example.com", ip="198.51.100.6").status_code == 302  # another address


def test_a_site_wide_burst_of_sign_ups_is_limited(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "signup_global": "3/minute"}
    statuses = [_sign_up(f"wave{i}@example.com", ip=f"198.51.100.{20 + i}").status_code for i in range(4)]
    assert statuses == [302, 302, 302, 429]
    assert not User.objects.filter(email="wave3@example.com").exists()
