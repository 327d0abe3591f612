"""The charts a page shows for an org's billing period: the context the billing page and the Overview render
(templates/billing/_usage_charts.html)."""

from typing import Any

from billing import charts, usage_series
from billing.selectors import billing_state

TITLES = {"feature": "By feature", "model": "By model", "member": "By member", "key": "By API key"}


def usage_charts(*, org: Any, breakdowns: tuple[str, ...] = ("feature", "model", "member", "key")) -> dict[str, Any]:
    state = billing_state(org=org)
    first, last = usage_series.period_days(start=state.period_start, end=state.period_end)
    days = usage_series.usage_daily(org=org, start=first, end=last)
    return {
        "first": first, "last": last,
        "requests": charts.daily_chart(days, metric="requests", title="AI requests per day"),
        "cost": charts.daily_chart(days, metric="cost_usd", title="Model cost per day"),
        "breakdowns": [
            {"id": by, "title": TITLES[by], "head": usage_series.BREAKDOWNS[by][1],
             "rows": charts.share_rows(usage_series.usage_breakdown(org=org, by=by, start=first, end=last))}
            for by in breakdowns
        ],
    }  # fmt: skip
