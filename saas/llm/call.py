"""One gateway call, from its entry to its ledger row: the object `chat`, `chat_stream` and `embed` share.

Its steps, in order (saas/llm/gateway.py drives them):
  1. prepare: resolve the model and its chain, validate, guardrails on the input, the org's PII policy, and
     the org's standing (a payment overdue pauses AI requests, cached answers included);
  2. the caches (exact, then semantic): a hit is answered without a quota place, so an org at its limit still
     gets an answer it already paid for;
  3. reserve a quota place (only on a miss);
  4. attempts along the route (saas/llm/routing.py);
  5. finish: exactly one ledger row (saas/llm/ledger.py) with its usage row, then the quota settled.

`finish` runs once whatever happens: success, a refusal, an upstream failure, the client going away, Redis
or PostgreSQL failing under us (`guard()` records what escapes and turns store failures into a 503).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from django_guid import get_guid

from billing import quota
from saas.core import crypto
from saas.core.text import storable
from saas.llm import caches, guardrails, ledger, metrics, policy, routing, tracing
from saas.llm import config as gateway_config
from saas.llm.models import LLMCall, ModelConfig
from saas.llm.pii import Masker
from saas.llm.prompts import ResolvedPrompt
from saas.llm.providers import Cancelled, ChatRequest, LLMError, PaymentOverdue, QuotaExceeded, Usage

logger = logging.getLogger(__name__)
EIGHT_PLACES = Decimal("0.00000001")  # the ledger keeps costs to 8 decimal places
CENT_MILLIONTHS = Decimal("0.00000001")  # the ledger keeps costs to 8 decimal places


class StoreUnavailable(LLMError):
    """Redis or PostgreSQL failed where the call cannot do without it."""

    kind, retryable, http_status = "service_unavailable", False, 503


@dataclass(frozen=True)
class Caller:
    org: Any
    feature: str = "chat"
    user: Any = None
    api_key: Any = None
    trace_id: str = ""  # groups the ledger rows of one job (a crew run's id)

    @classmethod
    def of(cls, principal: Any, feature: str) -> Caller:
        """The caller behind an API request or a member's page: its org, and the member or key acting."""
        return cls(org=principal.organization, feature=feature, user=principal.user, api_key=principal.api_key)


def as_call_error(exc: BaseException) -> LLMError | None:
    """What the caller is told when `exc` ends a call: our own errors as they are, a store failure as a 503,
    anything else (a bug) None, to be raised as it is."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, redis.RedisError | DatabaseError):
        return StoreUnavailable("A service the gateway needs is unavailable for a moment. Try again shortly.")
    return None


@dataclass(frozen=True)
class _Ending:
    """A finished call's ledger entry, and what settling and the metrics need of it."""

    entry: ledger.Entry
    billable: bool
    model_label: str


class Call:
    def __init__(
        self, caller: Caller, *, requested: str, stream: bool = False, call_id: uuid.UUID | None = None,
        batched: bool = False, billed: bool = True, prompt: ResolvedPrompt | None = None,
    ) -> None:  # fmt: skip
        self.caller = caller
        self.prompt = prompt  # the managed system prompt the caller used (saas/llm/prompts.py), for the row
        self.requested = requested
        self.stream = stream
        self.id = call_id or uuid.uuid4()  # known before the row is written
        self.batched = batched  # the row may go through the ledger stream (the API's hot paths)
        self.billed = billed  # chat calls count against the plan; embeddings do not
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.model: ModelConfig | None = None
        self.route: routing.Route | None = None
        self.cache: str = LLMCall.Cache.MISS
        self.masker = Masker()
        self.guard = guardrails.Policy()
        self.findings: list[dict[str, Any]] = []
        self.input_text = ""
        self.period_start: Any = None
        self.reservation: quota.Reservation | None = None
        self.cost_usd = Decimal(0)
        self.finished = False

    # --- Steps ---------------------------------------------------------------------------------------------

    def note(self, findings: Any) -> guardrails.Finding | None:
        """Keep the guardrails' findings (each once) for the row; the first that blocks, if any."""
        for finding in findings:
            if (entry := finding.as_json()) not in self.findings:
                self.findings.append(entry)
        return guardrails.blocking(findings)

    def prepare(
        self, *, model: str, request: ChatRequest, complexity: str | None
    ) -> tuple[ModelConfig, list[ModelConfig], ChatRequest]:
        """Resolve, validate, screen and mask; check the org's standing. Returns the model, its chain and the
        request as it leaves."""
        conf = gateway_config.current()
        policy.refuse_unstorable(model=model, messages=request.messages, tools=request.tools or [])
        config, settings_row = policy.resolve_model(
            org=self.caller.org, feature=self.caller.feature, alias=model, request=request, complexity=complexity,
            conf=conf,
        )  # fmt: skip
        self.model = config
        policy.validate(request, config)
        self.guard = guardrails.Policy.of(settings_row)
        outbound = policy.mask(policy.screen_input(self.guard, request, self.note), settings_row, self.masker)
        self.input_text = json.dumps(outbound.messages)
        self.check_standing()
        return config, policy.chain(config, settings_row, conf), outbound

    def check_standing(self) -> None:
        try:
            self.period_start = quota.standing(org=self.caller.org).period_start
        except quota.PaymentOverdue as overdue:
            raise PaymentOverdue(overdue.message, details=overdue.details) from None

    def reserve(self) -> None:
        """A quota place, on a cache miss."""
        try:
            self.reservation = quota.reserve(org=self.caller.org)
        except quota.QuotaExceeded as exceeded:
            raise QuotaExceeded(exceeded.message, details=exceeded.details) from None
        except quota.PaymentOverdue as overdue:
            raise PaymentOverdue(overdue.message, details=overdue.details) from None
        self.period_start = self.reservation.period_start

    def along(self, chain: list[ModelConfig]) -> routing.Route:
        self.route = routing.Route(chain, self.caller.org)
        return self.route

    def token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def withhold(self, text: str, **record: Any) -> None:
        """Output guardrails on an answer (or a streamed answer's latest part): a blocking finding is recorded
        (the answer was paid for: the row keeps its usage) and raised instead of the answer."""
        if self.guard.active and (blocked := self.note(guardrails.screen_output(self.guard, text))):
            self.finish(LLMCall.Status.BLOCKED, **record)
            raise guardrails.refusal(blocked)

    # --- The one exit --------------------------------------------------------------------------------------

    @contextmanager
    def guard_exit(self) -> Iterator[None]:
        """Whatever escapes the block ends the call with its row (once); a store failure is raised as a 503."""
        try:
            yield
        except GeneratorExit:
            if not self.finished:
                self.cancel()
            raise
        except BaseException as exc:
            if self.finished:
                raise
            status, error = self._ending(exc)
            self.finish(status, error=error)
            self._raise_for(exc, error)

    @asynccontextmanager
    async def aguard_exit(self, hop: Callable[..., Awaitable[Any]]) -> AsyncGenerator[None, None]:
        """guard_exit for the async path: the row is written through `hop` (a worker thread), and a task
        cancelled (the client went away) is recorded as cancelled."""
        try:
            yield
        except (GeneratorExit, asyncio.CancelledError):
            if not self.finished:
                await asyncio.shield(hop(self.cancel))
            raise
        except BaseException as exc:
            if self.finished:
                raise
            status, error = self._ending(exc)
            await self.afinish(status, hop=hop, error=error)
            self._raise_for(exc, error)

    def _ending(self, exc: BaseException) -> tuple[str, LLMError]:
        """The status and error a call ends with when `exc` escapes it."""
        error = as_call_error(exc)
        status = LLMCall.Status.BLOCKED if isinstance(error, guardrails.GuardrailBlocked) else LLMCall.Status.ERROR
        if error is None:
            logger.exception("A gateway call failed unexpectedly", exc_info=exc)
        return status, error or StoreUnavailable(f"internal error ({type(exc).__name__})")

    @staticmethod
    def _raise_for(exc: BaseException, error: LLMError) -> None:
        if as_call_error(exc) is None or error is exc:
            raise exc
        raise error from exc

    def cancel(self, output_text: str = "", usage: Usage | None = None) -> None:
        """The client went away or pressed stop."""
        error = Cancelled("cancelled by the client")
        if self.route is not None and self.model is not None and self.route.answered is None and self.route.chain:
            self.route.cancelled(self.model, error)
        self.finish(LLMCall.Status.CANCELLED, usage=usage, error=error, output_text=output_text)

    def finish(
        self, status: str, *, usage: Usage | None = None, error: LLMError | None = None, output_text: str = "",
        cost_saved: Decimal = Decimal(0),
    ) -> str:  # fmt: skip
        """Write the call's ledger row (and usage row) and settle its quota place; returns the row's id. Runs
        once: a second call is a no-op."""
        if self.finished:
            return str(self.id)
        ending = self._ending_entry(status, usage=usage, error=error, output_text=output_text, cost_saved=cost_saved)
        self._submit(ending)
        return str(self.id)

    async def afinish(
        self, status: str, *, hop: Callable[..., Awaitable[Any]], usage: Usage | None = None,
        error: LLMError | None = None, output_text: str = "", cache: tuple[str, str] | None = None,
    ) -> str:  # fmt: skip
        """`finish` on the event loop (the gateway's async path): when the row goes through the ledger stream,
        the row, the quota settled and the exact cache entry (`cache`: key and payload) take one round trip on
        asyncio Redis (saas/llm/ledger.py `aenqueue`) instead of a hop to a worker thread. Redis failing there
        falls back, in a hop, on the database as `finish` does (exactly one row, whatever happens). Rows written
        at once (LLM_LEDGER batched off, or a call that is not `batched`) are written in a hop."""
        if self.finished:
            return str(self.id)
        if not (self.batched and settings.LLM_LEDGER["batched"]):
            await hop(self.finish, status, usage=usage, error=error, output_text=output_text)
            if cache is not None:
                await hop(caches.exact_put, *cache)
            return str(self.id)
        ending = self._ending_entry(status, usage=usage, error=error, output_text=output_text)
        # Shielded: a task cancelled meanwhile (a stream's client going away) still leaves the row behind it.
        await asyncio.shield(self._asubmit(ending, hop, cache))
        return str(self.id)

    def _ending_entry(
        self, status: str, *, usage: Usage | None, error: LLMError | None, output_text: str,
        cost_saved: Decimal = Decimal(0),
    ) -> _Ending:  # fmt: skip
        """The call's rows as its ledger entry (marks the call finished)."""
        self.finished = True
        usage = usage or Usage()
        model = self.model
        hit = self.cache in (LLMCall.Cache.EXACT, LLMCall.Cache.SEMANTIC)
        # Cache hits cost nothing; misses and bypasses were real upstream calls.
        paid = model is not None and not hit and status != LLMCall.Status.ERROR
        self.cost_usd = (ledger.cost(model, usage) if paid else Decimal(0)).quantize(EIGHT_PLACES)
        attempts = self.route.attempts if self.route else []
        used = [a for a in attempts if a["status"] == "ok"]
        now = timezone.now()
        # The current trace (saas/llm/tracing.py) gets the call as a span; the row carries the trace's id.
        trace_id = tracing.model_call(
            call_id=self.id, started=self.started, name=model.alias if model else storable(self.requested)[:64],
            status=status, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_usd=self.cost_usd, operation="chat" if self.billed else "embed", feature=self.caller.feature,
            cache=self.cache, stream=self.stream, error=error.kind if error else "",
            ttft_ms=round((self.first_token_at - self.started) * 1000) if self.first_token_at else None,
            fallbacks=len({a["model"] for a in attempts}) - 1 if attempts else 0,
        )  # fmt: skip
        row = {
            "id": str(self.id), "created_at": now.isoformat(), "updated_at": now.isoformat(),
            "organization_id": str(self.caller.org.pk),
            "user_id": str(self.caller.user.pk) if self.caller.user is not None else None,
            "api_key_id": str(self.caller.api_key.pk) if self.caller.api_key is not None else None,
            "request_id": get_guid() or "", "trace_id": self.caller.trace_id or trace_id,
            "feature": self.caller.feature,
            "model_requested": storable(self.requested)[:64],  # a refused alias may hold what text columns cannot
            "model_used": model.alias if model else "", "upstream": model.upstream if model else "",
            "stream": self.stream, "attempts": attempts,
            "fallbacks_taken": len({a["model"] for a in attempts}) - 1 if attempts else 0,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "tokens_estimated": usage.estimated, "cost_usd": str(self.cost_usd), "cost_saved_usd": str(cost_saved),
            "latency_ms": round((time.perf_counter() - self.started) * 1000),
            "ttft_ms": round((self.first_token_at - self.started) * 1000) if self.first_token_at else None,
            "cache": self.cache, "status": status, "error_class": error.kind if error else "",
            "pii_masked": self.masker.found, "guardrails": self.findings,
            "input_encrypted": crypto.encrypt(self.input_text), "output_encrypted": crypto.encrypt(output_text),
            "prompt_version_id": str(p.version_id) if (p := self.prompt) and p.version_id else None,
            "experiment_variant_id": str(p.variant_id) if (p := self.prompt) and p.variant_id else None,
        }  # fmt: skip
        answered = status in (LLMCall.Status.OK, LLMCall.Status.CANCELLED)
        kind = None
        if self.billed and answered and self.period_start is not None:
            kind = "cache_hit" if hit else ("request" if self.reservation is not None else None)
        usage_row = ledger.usage_row(call=row, kind=kind, period_start=self.period_start) if kind else None
        trace = tracing.ended_by_call(status, error)  # an API call's trace travels with its row
        label = used[-1]["model"] if used else (model.alias if model else "none")
        return _Ending(ledger.Entry(row, usage_row, trace), billable=kind == "request", model_label=label)

    def _submit(self, ending: _Ending) -> None:
        """The entry handed to the ledger (either path), the quota settled, the metrics."""
        try:
            ledger.submit(ending.entry, batched=self.batched)
        except ledger.LedgerUnavailable:
            self._release(billable=False)
            raise
        self._release(billable=ending.billable)
        self._observe(ending)

    async def _asubmit(self, ending: _Ending, hop: Callable[..., Awaitable[Any]], cache: Any) -> None:
        reservation = self.reservation if self.reservation is not None and self.reservation.in_redis else None
        try:
            used = await ledger.aenqueue(ending.entry, settle=reservation, billable=ending.billable, cache=cache)
        except Exception:
            logger.warning("Ledger stream unavailable; writing call %s at once", self.id, exc_info=True)
            metrics.store_error("redis", "ledger")
            # Whether the quota script ran is unknown (a connection lost after it ran): the place is not settled
            # again (it expires on its own), so a call is never counted twice.
            self.reservation = None
            await hop(self._submit_at_once, ending)
            return
        self.reservation = None
        if reservation is not None and quota.thresholds_crossed(reservation, used):
            await hop(quota.settled, reservation, used)  # the usage warnings (rare: a threshold crossed)
        self._observe(ending)

    def _submit_at_once(self, ending: _Ending) -> None:
        """After the stream refused the entry: the database, else the stream once more, else LedgerUnavailable."""
        ledger.submit(ending.entry, batched=False)
        self._observe(ending)

    def _observe(self, ending: _Ending) -> None:
        row = ending.entry.call
        metrics.observe(SimpleNamespace(**{**row, "cost_usd": self.cost_usd}), model_label=ending.model_label)

    def _release(self, *, billable: bool) -> None:
        if self.reservation is not None:
            reservation, self.reservation = self.reservation, None
            quota.release(reservation, billable=billable)


class CallStream(Generator[Any, None, None]):
    """A call's stream of items. Closing it before the first item still ends the call with its row."""

    def __init__(self, call: Call, items: Generator[Any, None, None]) -> None:
        self.call = call
        self.items = items
        self.started = False

    def send(self, value: None) -> Any:
        self.started = True
        return self.items.send(value)

    def throw(self, *args: Any) -> Any:  # type: ignore[override]
        return self.items.throw(*args)

    def close(self) -> None:
        if not self.started and not self.call.finished:
            self.call.cancel()
        self.items.close()
