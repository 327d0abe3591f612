"""A local Stripe for the tests: localstripe (customers, products, plans, subscriptions, invoices, events)
served on a loopback port, with the endpoints it lacks added in the same server, speaking Stripe's protocol:

    GET  /v1/account                        the account behind the key (dj-stripe asks once per key)
    POST /v1/checkout/sessions              Stripe Checkout (GET /v1/checkout/sessions/{id} too)
    POST /v1/billing_portal/sessions        the customer portal
    POST /v1/billing/meter_events           metered usage; an `identifier` or `Idempotency-Key` seen
                                            before is answered again and not counted twice, as Stripe does

and, under /_config/ (no key needed, as for localstripe's own controls), what Stripe's hosted pages and its
payment processing would do:

    GET  /_config/checkout/{id}             the hosted Checkout page: a Pay button (POST .../pay, then back
                                            to the session's success_url)
    POST /_config/checkout/{id}/complete    the customer pays: a subscription to the session's first price
    POST /_config/subscriptions/{id}          {"status": "past_due"} sets a subscription's status
    GET  /_config/meter_events                the meter events counted (for assertions)

localstripe supports one item per subscription: a subscription made by Checkout carries only the plan's
base price; the metered price of the checkout session is recorded on the session.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from aiohttp import web
from localstripe import resources, server, webhooks

resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]  # in memory: no shared pickle


def _as_stripe_sends(cls: Any, fix: Any) -> None:
    """Where localstripe's objects differ from what Stripe sends (and dj-stripe relies on), correct them."""
    export = cls._export

    def _export(self: Any, expand: Any = None) -> dict[str, Any]:
        return fix(self, export(self, expand=expand))

    cls._export = _export


# Stripe's subscription items name their subscription (localstripe keeps it private); lists are never null.
_as_stripe_sends(resources.SubscriptionItem, lambda item, data: {**data, "subscription": item._subscription})
_as_stripe_sends(
    resources.Subscription, lambda sub, data: {**data, "default_tax_rates": data.get("default_tax_rates") or []}
)
_as_stripe_sends(
    resources.Invoice, lambda invoice, data: {**data, "default_tax_rates": data.get("default_tax_rates") or []}
)

ACCOUNT = {
    "id": "acct_crewdesklocal", "object": "account", "type": "standard", "country": "US",
    "default_currency": "usd", "email": "billing@crewdesk.test", "charges_enabled": True,
    "payouts_enabled": True, "details_submitted": True, "business_profile": {"name": "Crewdesk (local)"},
    "settings": {"dashboard": {"display_name": "Crewdesk (local)"}}, "metadata": {}, "created": 1700000000,
}  # fmt: skip


class FakeStripeState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checkout_sessions: dict[str, dict[str, Any]] = {}
        self.meter_events: list[dict[str, Any]] = []
        self.seen_identifiers: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.base_url = ""


state = FakeStripeState()


def _id(prefix: str) -> str:
    return prefix + resources.random_id(24)


async def _form(request: web.Request) -> dict[str, Any]:
    return await server.get_post_data(request) or {}


async def account(request: web.Request) -> web.Response:
    return web.json_response(ACCOUNT)


async def checkout_create(request: web.Request) -> web.Response:
    data = await _form(request)
    if not data.get("success_url") or not data.get("line_items") or data.get("mode") != "subscription":
        return _error(400, "Missing required param: success_url, line_items and mode=subscription.")
    if data.get("customer"):
        resources.Customer._api_retrieve(data["customer"])  # 404 as Stripe when unknown
    session_id = _id("cs_test_")
    session = {
        "id": session_id, "object": "checkout.session", "mode": "subscription", "status": "open",
        "payment_status": "unpaid", "customer": data.get("customer"), "subscription": None,
        "client_reference_id": data.get("client_reference_id"), "metadata": data.get("metadata") or {},
        "line_items": data["line_items"], "success_url": data["success_url"], "cancel_url": data.get("cancel_url"),
        "url": f"{state.base_url}/_config/checkout/{session_id}", "created": int(time.time()), "livemode": False,
    }  # fmt: skip
    with state.lock:
        state.checkout_sessions[session_id] = session
    return web.json_response(_public(session))


def _public(session: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in session.items() if key != "line_items"}


async def checkout_retrieve(request: web.Request) -> web.Response:
    session = state.checkout_sessions.get(request.match_info["id"])
    return web.json_response(_public(session)) if session else _error(404, "No such checkout.session")


async def checkout_page(request: web.Request) -> web.Response:
    """Stripe's hosted Checkout page, reduced to its Pay button (for browser tests)."""
    session = state.checkout_sessions.get(request.match_info["id"])
    if session is None:
        return _error(404, "No such checkout.session")
    return web.Response(
        content_type="text/html",
        text=(
            "<!doctype html><title>Checkout</title><h1>Local Stripe Checkout</h1>"
            f"<p>Subscribe to {session['line_items'][0]['price']}</p>"
            f"<form method=post action='/_config/checkout/{session['id']}/pay'><button id=pay>Pay</button></form>"
        ),
    )


async def checkout_pay(request: web.Request) -> web.Response:
    response = await checkout_complete(request)
    if response.status != 200:
        return response
    raise web.HTTPSeeOther(state.checkout_sessions[request.match_info["id"]]["success_url"])


async def checkout_complete(request: web.Request) -> web.Response:
    session = state.checkout_sessions.get(request.match_info["id"])
    if session is None:
        return _error(404, "No such checkout.session")
    customer = session["customer"]
    card = resources.PaymentMethod._api_create(
        type="card", card={"number": "4242424242424242", "exp_month": "12", "exp_year": "2035", "cvc": "123"}
    )
    resources.PaymentMethod._api_attach(card.id, customer=customer)
    resources.Customer._api_update(customer, invoice_settings={"default_payment_method": card.id})
    base_price = session["line_items"][0]["price"]
    subscription = resources.Subscription._api_create(customer=customer, items=[{"plan": base_price}],
                                                      metadata=session["metadata"])  # fmt: skip
    session.update(status="complete", payment_status="paid", subscription=subscription.id)
    return web.json_response(_public(session))


async def subscription_set_status(request: web.Request) -> web.Response:
    subscription = resources.Subscription._api_retrieve(request.match_info["id"])
    body = await request.json()
    subscription.status = body["status"]
    if body["status"] == "canceled":
        subscription.ended_at = int(time.time())
    return web.json_response(subscription._export())


async def portal_create(request: web.Request) -> web.Response:
    data = await _form(request)
    if not data.get("customer"):
        return _error(400, "Missing required param: customer.")
    resources.Customer._api_retrieve(data["customer"])
    portal_id = _id("bps_")
    return web.json_response({
        "id": portal_id, "object": "billing_portal.session", "customer": data["customer"],
        "return_url": data.get("return_url"), "url": f"{state.base_url}/_config/portal/{portal_id}",
        "created": int(time.time()), "livemode": False,
    })  # fmt: skip


async def portal_page(request: web.Request) -> web.Response:
    return web.Response(
        content_type="text/html",
        text="<!doctype html><title>Billing portal</title>"
        "<h1>Local Stripe customer portal</h1><p>Cards, invoices and cancelling live here.</p>",
    )


async def meter_create(request: web.Request) -> web.Response:
    data = await _form(request)
    if not data.get("event_name") or not data.get("display_name"):
        return _error(400, "Missing required param: event_name, display_name.")
    return web.json_response({"id": _id("mtr_"), "object": "billing.meter", "status": "active", **data})


async def price_create(request: web.Request) -> web.Response:
    """Metered prices (localstripe has plans only): enough for `stripe_setup` to link one."""
    data = await _form(request)
    if not data.get("product") or not data.get("currency") or not data.get("recurring"):
        return _error(400, "Missing required param: product, currency, recurring.")
    resources.Product._api_retrieve(data["product"])
    return web.json_response({"id": _id("price_"), "object": "price", "active": True, "type": "recurring", **data})


async def meter_event_create(request: web.Request) -> web.Response:
    data = await _form(request)
    payload = data.get("payload") or {}
    if not data.get("event_name") or not payload.get("stripe_customer_id") or "value" not in payload:
        return _error(400, "Missing required param: event_name, payload[stripe_customer_id], payload[value].")
    identifier = data.get("identifier") or _id("mev_")
    key = request.headers.get("Idempotency-Key")
    with state.lock:
        for seen in (identifier, key):
            if seen and seen in state.seen_identifiers:
                return web.json_response(state.seen_identifiers[seen])
        event = {
            "object": "billing.meter_event", "event_name": data["event_name"], "identifier": identifier,
            "payload": payload, "timestamp": int(data.get("timestamp") or time.time()),
            "created": int(time.time()), "livemode": False,
        }  # fmt: skip
        state.meter_events.append(event)
        state.seen_identifiers[identifier] = event
        if key:
            state.seen_identifiers[key] = event
    return web.json_response(event)


async def meter_events_list(request: web.Request) -> web.Response:
    with state.lock:
        return web.json_response(list(state.meter_events))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"type": "invalid_request_error", "message": message}}, status=status)


@web.middleware
async def record_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    with state.lock:
        state.requests.append((request.method, request.path))
    if request.method == "GET" and "discounts" in request.query_string:
        # dj-stripe expands invoices' discounts, which localstripe does not model (there are none here).
        kept = [(k, v) for k, v in request.query.items() if not (k.startswith("expand") and "discounts" in v)]
        request = request.clone(rel_url=request.rel_url.with_query(kept))
    return await handler(request)


def _build_app() -> web.Application:
    app = server.app
    app.middlewares.insert(0, record_requests)
    app.router.add_get("/v1/account", account)
    app.router.add_post("/v1/checkout/sessions", checkout_create)
    app.router.add_get("/v1/checkout/sessions/{id}", checkout_retrieve)
    app.router.add_post("/v1/billing_portal/sessions", portal_create)
    app.router.add_post("/v1/billing/meters", meter_create)
    app.router.add_post("/v1/prices", price_create)
    app.router.add_post("/v1/billing/meter_events", meter_event_create)
    app.router.add_get("/_config/checkout/{id}", checkout_page)
    app.router.add_get("/_config/portal/{id}", portal_page)
    app.router.add_post("/_config/checkout/{id}/pay", checkout_pay)
    app.router.add_post("/_config/checkout/{id}/complete", checkout_complete)
    app.router.add_post("/_config/subscriptions/{id}", subscription_set_status)
    app.router.add_get("/_config/meter_events", meter_events_list)
    return app


class FakeStripeServer:
    """One per process (localstripe keeps its objects and its app in module globals): started in a thread."""

    _shared: FakeStripeServer | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> FakeStripeServer:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls().start_in_thread()
            return cls._shared

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_in_thread(self) -> FakeStripeServer:
        threading.Thread(target=self._serve, daemon=True, name="fake-stripe").start()
        if not self._ready.wait(15):
            raise RuntimeError("the fake Stripe did not start")
        state.base_url = self.base_url
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(_build_app(), access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self.loop.run_forever()

    def reset(self) -> None:
        resources.store.clear()
        webhooks._webhooks.clear()
        with state.lock:
            state.checkout_sessions.clear()
            state.meter_events.clear()
            state.seen_identifiers.clear()
            state.requests.clear()

    @staticmethod
    def checkout_session(session_id: str) -> dict[str, Any]:
        with state.lock:
            return json.loads(json.dumps(state.checkout_sessions[session_id]))

    @staticmethod
    def requests() -> list[tuple[str, str]]:
        with state.lock:
            return list(state.requests)

    @staticmethod
    def meter_events() -> list[dict[str, Any]]:
        with state.lock:
            return json.loads(json.dumps(state.meter_events))
