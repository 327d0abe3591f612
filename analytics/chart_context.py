"""The Insights page's charts and tables, built from insights_get's data (the same the API returns)."""

from decimal import Decimal
from typing import Any

from analytics.charts import Point, bar_chart, line_chart, step_labels
from billing.charts import _fmt

KIND_NAMES = {"blocked": "Blocked by guardrails", "unknown": "Unknown"}


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _ms(value: int | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:,.2f} s" if value >= 1000 else f"{value:,} ms"


def _money(value: str) -> str:
    return _fmt(float(Decimal(value)), True)


def insights_charts(data: dict[str, Any]) -> dict[str, Any]:
    step = data["step"]
    per = "hour" if step == "hour" else "day"
    slots = []
    for item in data["series"]:
        short, long = step_labels(item["start"], step)
        slots.append({**item, "short": short, "long": long, "cost": float(Decimal(item["cost_usd"]))})

    def bars(key: str, title: str, unit: str = "", money: bool = False) -> Any:
        points = [Point(slot["short"], slot["long"], float(slot[key])) for slot in slots]
        return bar_chart(points, title=title, unit=unit, money=money)

    totals = data["totals"]
    kinds = data["errors_by_kind"]
    largest = max((kind["count"] for kind in kinds), default=0)
    grounded = data["groundedness"]
    grounded_points = [
        Point(
            f"{g['from']:.1f}" if g["from"] < 1 else "1.0",
            f"Groundedness {g['from']:.1f} to {g['to']:.1f}" if g["from"] < 1 else "Fully supported (1.0)",
            float(g["answers"]),
        )
        for g in grounded
    ]
    return {
        "per": per,
        "tiles": [
            ("Requests", f"{totals['requests']:,}"),
            ("Error rate", _percent(totals["error_rate"])),
            ("Latency p50 / p95", f"{_ms(totals['latency_p50_ms'])} / {_ms(totals['latency_p95_ms'])}"),
            ("First token p50 / p95", f"{_ms(totals['ttft_p50_ms'])} / {_ms(totals['ttft_p95_ms'])}"),
            ("Tokens", f"{totals['tokens']:,}"),
            ("Model cost", _money(totals["cost_usd"])),
            ("Cache hit rate", _percent(totals["cache_hit_rate"])),
            ("Saved by the cache", _money(totals["cost_saved_usd"])),
            ("Feedback rate", _percent(totals["feedback_rate"])),
            ("Thumbs-down share", _percent(totals["thumbs_down_share"])),
            ("Mean groundedness", "—" if totals["groundedness_mean"] is None else f"{totals['groundedness_mean']:.2f}"),
        ],
        "requests": bars("requests", f"Requests per {per}", unit="request"),
        "errors": bars("errors", f"Errors per {per}", unit="error"),
        "latency": line_chart(
            slots,
            title=f"Latency per {per}",
            total=f"p50 {_ms(totals['latency_p50_ms'])}",
            series=[
                ("latency_p50_ms", "p50", "line-a"),
                ("latency_p95_ms", "p95", "line-b"),
                ("ttft_p50_ms", "first token p50", "line-c"),
            ],
        ),
        "tokens": bars("tokens", f"Tokens per {per}", unit="token"),
        "cost": bars("cost", f"Model cost per {per}", money=True),
        "cache": bars("cache_hits", f"Cache hits per {per}", unit="hit"),
        "groundedness": bar_chart(grounded_points, title="Groundedness of grounded answers", unit="answer"),
        "kinds": [
            {
                "label": KIND_NAMES.get(k["kind"], k["kind"].replace("_", " ").capitalize()),
                "count": k["count"],
                "percent": round(100 * k["count"] / largest, 1) if largest else 0,
            }
            for k in kinds
        ],
        "pairs": [
            {
                **pair,
                "latency_p50": _ms(pair["latency_p50_ms"]),
                "latency_p95": _ms(pair["latency_p95_ms"]),
                "ttft_p50": _ms(pair["ttft_p50_ms"]),
                "ttft_p95": _ms(pair["ttft_p95_ms"]),
                "cost": _money(pair["cost_usd"]),
                "cache": _percent(pair["cache_hit_rate"]),
                "errors_rate": _percent(pair["error_rate"]),
                "down": _percent(pair["thumbs_down_share"]),
            }
            for pair in data["by_model_feature"]
        ],
    }
