"""Where an API key may be used from, and noticing a key used from too many places.

- Allowed networks: an admin may pin a key to networks (CIDR). A call from elsewhere is refused with 403
  `ip_not_allowed`, and audited (once per key and address per hour, so a loop cannot flood the log).
- Spread: the networks a key is used from (/24 for IPv4, /48 for IPv6) are counted per key and hour in Redis.
  Past API_KEY_NETWORKS_ALERT in one hour, the org's owners get one notification per key and hour, and the
  audit log one `api_key.many_networks` event: a leaked or shared key shows up as many networks at once.
"""

import ipaddress
import threading
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from accounts import services
from accounts.models import ApiKey, Membership
from accounts.permissions import ADMIN, Principal, principal_for_key
from saas.core import on_loop
from saas.core.errors import ApplicationError, NotFound, PermissionDenied
from saas.core.redis import get_redis

MAX_NETWORKS = 50
WINDOW_SECONDS = 3600
# A process counts a key's network in Redis at most once a minute: the set already holds it (its count only
# grows when another network is added, which is counted, and alerted on, by whoever adds it), so a key's
# steady traffic costs no round trip for it. A network's count may lag its window's start by that minute.
RECOUNT_SECONDS = 60
_counted: dict[tuple[Any, str], float] = {}
_counted_lock = threading.Lock()


class IpNotAllowed(PermissionDenied):
    code = "ip_not_allowed"


def networks_validate(values: list[str]) -> list[str]:
    """The networks as their canonical CIDR text; a clear 400 naming the bad ones."""
    if len(values) > MAX_NETWORKS:
        raise _invalid(f"At most {MAX_NETWORKS} networks.")
    networks, bad = [], []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(str(value).strip(), strict=False)))
        except ValueError:
            bad.append(str(value)[:60])
    if bad:
        raise _invalid(f"Not a network (use CIDR such as 203.0.113.0/24 or 2001:db8::/48): {', '.join(bad)}.")
    return sorted(set(networks), key=networks.index)


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, code="invalid", details={"fields": {"allowed_networks": [message]}})


@transaction.atomic
def api_key_networks_set(
    *, principal: Principal, key_id: Any, networks: list[str], origin: services.Origin | None = None
) -> ApiKey:
    principal.require(ADMIN)
    cleaned = networks_validate(networks)
    api_key = ApiKey.objects.for_org(principal.organization).select_for_update().filter(pk=key_id).first()
    if api_key is None:
        raise NotFound("No such API key in this org.")
    if api_key.allowed_networks != cleaned:
        previous = list(api_key.allowed_networks)
        api_key.allowed_networks = cleaned
        api_key.save(update_fields=["allowed_networks", "updated_at"])
        services.audit_record(
            org=principal.organization, action="api_key.networks_changed", principal=principal, target=api_key,
            origin=origin, metadata={"before": previous, "after": cleaned},
        )  # fmt: skip
    return api_key


def check_key_origin(*, api_key: ApiKey, ip: str | None) -> None:
    """Refuses a call from outside the key's allowed networks (403), and counts the key's networks."""
    address = _address(ip)
    if api_key.allowed_networks:
        allowed = address is not None and any(
            address.version == network.version and address in network
            for network in (ipaddress.ip_network(cidr) for cidr in api_key.allowed_networks)
        )
        if not allowed:
            _audit_denied(api_key, ip)
            raise IpNotAllowed(
                f"This API key may not be used from {ip or 'an unknown address'}.",
                details={"ip": ip},
            )
    if address is not None:
        _count_network(api_key, address)


def _address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip) if ip else None
    except ValueError:
        return None


def _prefix() -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', 'crewdesk')}:keyguard"


def _audit_denied(api_key: ApiKey, ip: str | None) -> None:
    if not get_redis().set(f"{_prefix()}:denied:{api_key.pk}:{ip}", 1, nx=True, ex=WINDOW_SECONDS):
        return  # already recorded this hour
    on_loop.blocking(
        services.audit_record,
        org=api_key.organization, action="api_key.ip_denied", principal=principal_for_key(api_key),
        target=api_key, origin=services.Origin(ip=ip), metadata={"allowed_networks": api_key.allowed_networks},
    )  # fmt: skip


def _network_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    length = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{length}", strict=False))


def _count_network(api_key: ApiKey, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    threshold = int(settings.API_KEY_NETWORKS_ALERT)
    if threshold <= 0:
        return
    network = _network_of(address)
    now = time.monotonic()
    seen = _counted.get((api_key.pk, network))
    if seen is not None and now - seen < RECOUNT_SECONDS:
        return
    key = f"{_prefix()}:networks:{api_key.pk}"
    pipe = get_redis().pipeline()
    pipe.sadd(key, network)
    pipe.expire(key, WINDOW_SECONDS, nx=True)  # the window starts with the first network of the hour
    pipe.scard(key)
    _, _, count = pipe.execute()
    with _counted_lock:
        if len(_counted) >= 10_000:
            _counted.clear()
        _counted[(api_key.pk, network)] = now
    if count <= threshold:
        return
    if not get_redis().set(f"{_prefix()}:alerted:{api_key.pk}", 1, nx=True, ex=WINDOW_SECONDS):
        return  # one alert per key and window
    on_loop.blocking(_alert_many_networks, api_key, address, count, threshold)


@transaction.atomic
def _alert_many_networks(api_key: ApiKey, address: Any, count: int, threshold: int) -> None:
    """The owners told once per window that a key is used from many networks, with an audit row."""
    services.audit_record(
        org=api_key.organization, action="api_key.many_networks", principal=principal_for_key(api_key),
        target=api_key, origin=services.Origin(ip=str(address)),
        metadata={"networks": count, "threshold": threshold, "window_seconds": WINDOW_SECONDS},
    )  # fmt: skip
    services.notify_members(
        org=api_key.organization,
        roles=[Membership.Role.OWNER],
        title=f"API key {api_key.name} ({api_key.prefix}…) was used from {count} networks in the last hour. "
        "If that is not expected, rotate or revoke it.",
        url=reverse("org-api-keys", kwargs={"org_slug": api_key.organization.slug}),
    )
