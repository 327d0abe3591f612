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
