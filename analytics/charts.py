"""The dashboards' charts, drawn on the server as SVG like billing's (billing/charts.py: its geometry, axis and
formats are reused): bars for counts and money over time and for the groundedness distribution, lines for the
latency percentiles. Colours come from CSS (static/css/overview.css, analytics.css), so dark mode follows; every
mark has a <title> and every chart a table next to it for screen readers."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billing.charts import (
    BOTTOM,
    HEIGHT,
    LEFT,
    RIGHT,
    TOP,
    WIDTH,
    Bar,
    DailyChart,
    Tick,
    XLabel,
    _fmt,
    _nice_max,
)  # fmt: skip


@dataclass(frozen=True)
class Point:
    short: str  # the x-axis label
    long: str  # in the mark's title
    value: float


def _x_labels(points: list[Any], slot: float) -> list[XLabel]:
    every = max(1, len(points) // 6)
    return [XLabel(x=round(LEFT + i * slot + slot / 2, 2), label=point.short)
            for i, point in enumerate(points) if i % every == 0]  # fmt: skip


def bar_chart(points: list[Point], *, title: str, unit: str = "", money: bool = False, total: str = "") -> DailyChart:
    """One bar per point, a y axis of three ticks; `unit` names a count in the titles ("request")."""
    values = [point.value for point in points]
    top = _nice_max(max(values, default=0))
    top = top if money else max(top, 2.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(1, len(points))
    gap = min(4.0, slot * 0.2)
    bars = []
    for index, point in enumerate(points):
        height = round(plot_h * point.value / top, 2)
        shown = _fmt(point.value, money) if money or not unit else (
            f"{point.value:,.0f} {unit}{'' if point.value == 1 else 's'}")  # fmt: skip
        bars.append(Bar(x=round(LEFT + index * slot + gap / 2, 2), y=round(TOP + plot_h - height, 2),
                        width=round(slot - gap, 2), height=height, title=f"{point.long}: {shown}"))  # fmt: skip
    ticks = [Tick(y=round(TOP + plot_h - plot_h * f, 2), label=_fmt(top * f, money)) for f in (0, 0.5, 1)]
    return DailyChart(title=title, bars=bars, ticks=ticks, labels=_x_labels(points, slot),
                      total=total or _fmt(sum(values), money), has_data=any(values))  # fmt: skip


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Line:
    name: str
    css: str  # the class that colours it (analytics.css)
    path: str  # SVG polyline points
    dots: list[Dot]


@dataclass(frozen=True)
class LineChart:
    title: str
    lines: list[Line]
    ticks: list[Tick]
    labels: list[XLabel]
    total: str
    has_data: bool
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT


def _ms(value: float) -> str:
    return f"{value / 1000:,.1f} s" if value >= 1000 else f"{value:,.0f} ms"


def line_chart(points: list[Any], *, title: str, series: list[tuple[str, str, str]], total: str = "") -> LineChart:
    """Lines over the same x slots as bar_chart; `points` are dicts, `series` (key, name, css class) each; a
    missing value (no calls in that slot) breaks no line: the slot is skipped."""
    values = [point[key] for point in points for key, _, _ in series if point[key] is not None]
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(1, len(points))
    lines = []
    for key, name, css in series:
        dots = []
        for index, point in enumerate(points):
            if point[key] is None:
                continue
            x = round(LEFT + index * slot + slot / 2, 2)
            y = round(TOP + plot_h - plot_h * point[key] / top, 2)
            dots.append(Dot(x, y, f"{point['long']}: {name} {_ms(point[key])}"))
        lines.append(Line(name, css, " ".join(f"{dot.x},{dot.y}" for dot in dots), dots))
    ticks = [Tick(y=round(TOP + plot_h - plot_h * f, 2), label=_ms(top * f)) for f in (0, 0.5, 1)]
    labels = [XLabel(x=round(LEFT + i * slot + slot / 2, 2), label=point["short"])
              for i, point in enumerate(points) if i % max(1, len(points) // 6) == 0]  # fmt: skip
    return LineChart(title=title, lines=lines, ticks=ticks, labels=labels, total=total, has_data=bool(values))


def step_labels(start: str, step: str) -> tuple[str, str]:
    moment = datetime.fromisoformat(start)
    if step == "hour":
        return f"{moment:%H:00}", f"{moment:%a %-d %b %H:00} UTC"
    return f"{moment:%-d %b}", f"{moment:%a %-d %b}"
