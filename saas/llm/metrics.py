"""Prometheus metrics of the gateway (exported at /metrics with the rest)."""

from typing import Any

from prometheus_client import Counter, Histogram

REQUESTS = Counter("crewdesk_llm_requests_total", "Gateway requests", ["model", "status", "cache", "feature"])
TOKENS = Counter("crewdesk_llm_tokens_total", "Tokens through the gateway", ["model", "kind"])
COST = Counter("crewdesk_llm_cost_usd_total", "Cost in USD", ["model"])
LATENCY = Histogram(
    "crewdesk_llm_latency_seconds", "Total latency", ["model", "status", "cache"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)  # fmt: skip
TTFT = Histogram(
    "crewdesk_llm_ttft_seconds", "Time to first token (streams)", ["model", "cache"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip


def observe(call: Any, *, model_label: str) -> None:
    REQUESTS.labels(model_label, call.status, call.cache, call.feature).inc()
    TOKENS.labels(model_label, "prompt").inc(call.prompt_tokens)
    TOKENS.labels(model_label, "completion").inc(call.completion_tokens)
    COST.labels(model_label).inc(float(call.cost_usd))
    LATENCY.labels(model_label, call.status, call.cache).observe(call.latency_ms / 1000)
    if call.ttft_ms is not None:
        TTFT.labels(model_label, call.cache).observe(call.ttft_ms / 1000)


# A store (Redis, PostgreSQL) failed under the gateway and the call went on without it (the breaker failed
# open, the ledger row took the other path, ...): `store` is redis or database, `step` what was skipped.
STORE_ERRORS = Counter("crewdesk_llm_store_errors_total", "Store failures the gateway worked around", ["store", "step"])
# Ledger rows written by the background writer (saas/llm/ledger.py), and rows it found already written.
LEDGER_WRITTEN = Counter("crewdesk_llm_ledger_rows_total", "Ledger rows written", ["path"])


def store_error(store: str, step: str) -> None:
    STORE_ERRORS.labels(store, step).inc()
