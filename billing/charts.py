"""Charts drawn on the server as SVG (templates/billing/_chart_*.html): no JavaScript, nothing to vendor, and
nothing the Content-Security-Policy has to allow (presentation attributes are not styles). Colours come from
the page's CSS (static/css/overview.css), so dark mode and print follow. Every chart has a text equivalent (a
title on each bar and a table or list next to it) for screen readers.

These functions only compute geometry from rows a selector already aggregated (billing/usage_series.py).
"""

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

WIDTH, HEIGHT = 600, 200
LEFT, RIGHT, BOTTOM, TOP = 52, 18, 28, 10


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class XLabel:
    x: float
    label: str


@dataclass(frozen=True)
class DailyChart:
    title: str
    bars: list[Bar]
    ticks: list[Tick]
    labels: list[XLabel]
    total: str
    has_data: bool
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    base: float = HEIGHT - BOTTOM


def _nice_max(value: float) -> float:
    """A round top for the axis: 1, 2, 2.5 or 5 times a power of ten, at least the value."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def _fmt(value: float, money: bool) -> str:
    if money:
        if value >= 0.01 or value == 0:
            return f"${value:,.2f}"
        return "$" + f"{value:.6f}".rstrip("0")
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def daily_chart(days: list[Any], *, metric: str, title: str) -> DailyChart:
    """Bars of `metric` ("requests" or "cost_usd") per day, with a y axis of three ticks and a few dates."""
    money = metric == "cost_usd"
    values = [float(getattr(day, metric)) for day in days]
    top = _nice_max(max(values, default=0))
    top = top if money else max(top, 2.0)  # whole requests on the axis
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(1, len(days))
    gap = min(4.0, slot * 0.2)
    bars = []
    for index, (day, value) in enumerate(zip(days, values, strict=True)):
        height = round(plot_h * value / top, 2)
        shown = _fmt(value, money) if money else f"{int(value)} AI request{'s' if value != 1 else ''}"
        bars.append(Bar(x=round(LEFT + index * slot + gap / 2, 2), y=round(TOP + plot_h - height, 2),
                        width=round(slot - gap, 2), height=height,
                        title=f"{day.day:%a %-d %b}: {shown}"))  # fmt: skip
    ticks = [Tick(y=round(TOP + plot_h - plot_h * f, 2), label=_fmt(top * f, money)) for f in (0, 0.5, 1)]
    every = max(1, len(days) // 6)
    labels = [XLabel(x=round(LEFT + i * slot + slot / 2, 2), label=f"{day.day:%-d %b}")
              for i, day in enumerate(days) if i % every == 0]  # fmt: skip
    total = sum(values)
    return DailyChart(title=title, bars=bars, ticks=ticks, labels=labels, total=_fmt(total, money),
                      has_data=total > 0)  # fmt: skip


def share_rows(rows: list[dict[str, Any]], *, metric: str = "ai_requests") -> list[dict[str, Any]]:
    """Breakdown rows with `percent`: each bar's length relative to the largest (0-100)."""
    largest = max((float(row[metric]) for row in rows), default=0.0)
    return [{**row, "percent": round(100 * float(row[metric]) / largest, 1) if largest else 0.0,
             "cost_text": _fmt(float(row["cost_usd"] or Decimal(0)), True)} for row in rows]  # fmt: skip
