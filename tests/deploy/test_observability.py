"""deploy/grafana and deploy/prometheus: every dashboard is Grafana JSON, every rule parses (PromQL parser), and
every metric they name is one a running Crewdesk exports (scraped from a live daphne), one of the worker metrics
(crewdesk_celery_*), one of the rule file's own recordings, or one of the named exporter metrics below."""

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import BASE_DIR

GRAFANA = BASE_DIR / "deploy" / "grafana"
RULES = BASE_DIR / "deploy" / "prometheus" / "crewdesk-rules.yml"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))

# The worker metrics (Celery task counts and durations, queue lengths) of the storage slice of #18: allowed by
# name until they are exported; once they are, the scrape finds them like any other.
WORKER_METRICS = {
    "crewdesk_celery_tasks_total",
    "crewdesk_celery_task_duration_seconds_bucket",
    "crewdesk_celery_task_duration_seconds_sum",
    "crewdesk_celery_task_duration_seconds_count",
    "crewdesk_celery_queue_length",
}
# Not the application's: Prometheus' own `up`, and the standard exporters in front of managed PostgreSQL
# (prometheus-community/postgres_exporter) and Redis (oliver006/redis_exporter), each metric by its exact name.
EXPORTER_METRICS = {
    "up",
    "pg_up", "pg_stat_database_numbackends", "pg_settings_max_connections", "pg_stat_database_blks_hit",
    "pg_stat_database_blks_read", "pg_stat_database_xact_commit", "pg_stat_database_xact_rollback",
    "pg_stat_database_deadlocks", "pg_database_size_bytes", "pg_replication_lag_seconds",
    "redis_up", "redis_memory_used_bytes", "redis_memory_max_bytes", "redis_connected_clients",
    "redis_commands_processed_total", "redis_keyspace_hits_total", "redis_keyspace_misses_total",
    "redis_evicted_keys_total", "redis_db_keys",
}  # fmt: skip
# Grafana's variables, as Prometheus would see them after Grafana substitutes them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _dashboard_exprs() -> list[tuple[str, str]]:
    exprs = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                exprs.append((f"{path.name}: {panel['title']}", target["expr"]))
    return exprs


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _rule_exprs() -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"]) for rule in _rules()]


def _parse(expr: str) -> Any:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr.replace("$labels", "").replace("$value", ""), f"unknown variable in {expr}"
    return promql_parser.parse(expr)


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__")
            names.add(name)

    promql_parser.walk(_parse(expr), pre_visit=visit)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics page can produce, from its families (labelled metrics that have seen no
    sample yet still declare their family) and its samples."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
        }.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
        names |= {sample.name for sample in family.samples}
    return names


def _recorded() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


def unknown_metrics(exported: set[str], exprs: list[tuple[str, str]]) -> list[str]:
    known = exported | WORKER_METRICS | EXPORTER_METRICS | _recorded()
    return [f"{where}: {name}" for where, expr in exprs for name in sorted(metric_names(expr)) if name not in known]


def test_there_is_a_dashboard_for_each_area():
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    for area in ("HTTP", "LLM gateway", "RAG", "Crews", "Celery", "PostgreSQL", "Redis"):
        assert any(area in title for title in titles), area


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_each_dashboard_is_grafana_json_on_a_chosen_prometheus(path: Path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"].startswith("crewdesk-") and len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("Crewdesk / ") and "crewdesk" in dashboard["tags"]
    (variable,) = dashboard["templating"]["list"]
    assert variable == {**variable, "name": "datasource", "type": "datasource", "query": "prometheus"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 5
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])


def test_dashboard_uids_are_unique():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("where,expr", _dashboard_exprs() + _rule_exprs())
def test_every_expression_parses(where, expr):
    _parse(expr)


def test_the_parser_refuses_a_broken_expression():
    with pytest.raises(ValueError):
        _parse("sum(rate(crewdesk_django_http_responses_total_by_status_view_method_total[5m])")


def test_alert_rules_cover_the_slos_and_are_complete():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    alerts = {}
    for rule in _rules():
        assert ("alert" in rule) != ("record" in rule), rule
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]
            continue
        alerts[rule["alert"]] = rule
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        if "for" in rule:
            promql_parser.parse_duration(rule["for"])
    for needed in (
        "ErrorBudgetBurnFast", "ErrorBudgetBurnSlow", "AvailabilityBelowSLO", "LatencyP95High",
        "TimeToFirstTokenHigh", "QueueStuck", "CrewRunsStalled", "LLMBreakerOpen", "StripeWebhookFailures",
        "BeatSilent",
    ):  # fmt: skip
        assert f"Crewdesk{needed}" in alerts


def test_every_recording_an_expression_uses_is_defined():
    recorded = _recorded()
    for where, expr in _dashboard_exprs() + _rule_exprs():
        for name in metric_names(expr):
            if ":" in name:
                assert name in recorded, f"{where}: {name}"


def test_the_metric_check_catches_a_made_up_metric():
    exported = {"crewdesk_django_http_responses_total_by_status_view_method_total"}
    assert unknown_metrics(exported, [("x", "rate(crewdesk_made_up_total[5m])")]) == ["x: crewdesk_made_up_total"]
    assert (
        unknown_metrics(exported, [("x", "rate(crewdesk_django_http_responses_total_by_status_view_method_total[5m])")])
        == []
    )


@pytest.mark.live
def test_dashboards_and_rules_name_only_metrics_a_running_crewdesk_exports(daphne_server):
    with urllib.request.urlopen(daphne_server.url + "/metrics", timeout=30) as response:  # noqa: S310
        exported = exported_names(response.read().decode())
    # The scrape is real: the families the dashboards lean on most are there.
    assert {
        "crewdesk_django_http_requests_latency_seconds_by_view_method_bucket",
        "crewdesk_django_db_query_duration_seconds_bucket",
        "crewdesk_llm_requests_total",
        "process_resident_memory_bytes",
    } <= exported
    assert unknown_metrics(exported, _dashboard_exprs() + _rule_exprs()) == []
