"""deploy/loadtest: the locustfile loads in Locust with its three kinds of user, and the SLO table reads Locust's
CSV, prints p50/p95/p99 per endpoint and fails the run on any error. (`make loadtest` itself runs for minutes:
its figures are in deploy/ARCHITECTURE.md.)"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.deploy.conftest import BASE_DIR

LOADTEST = BASE_DIR / "deploy" / "loadtest"
HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def _run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loadtest_run", LOADTEST / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_locust_loads_the_mix(tmp_path):
    fixture = tmp_path / "fixture.json"
    member = {"cookie": "sessionid=x", "conversation": "00000000-0000-0000-0000-000000000001"}
    team = {"slug": "t", "org_id": "00000000-0000-0000-0000-000000000002", "key": "cdk_x", "crew": "c",
            "topics": ["travel"], "members": [member]}  # fmt: skip
    fixture.write_text(json.dumps({"url": "http://127.0.0.1:1", "teams": [team]}))
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOADTEST / "locustfile.py"), "--list"],
        capture_output=True, text=True, timeout=120, cwd=BASE_DIR, env={"LOADTEST_FIXTURE": str(fixture),
                                                                        "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"BrowserUser", "ApiClient", "OpenAIClient"} <= set(result.stdout.split())


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_the_slo_table_prints_percentiles_and_fails_on_errors(tmp_path, capsys):
    run = _run_module()
    sampler = run.Sampler.__new__(run.Sampler)
    sampler.peak_rss, sampler.cpu, sampler.cpu_start, sampler.elapsed = {"web (daphne)": 640.0}, {}, {}, 60.0
    sampler.servers = 2
    ok = _csv(tmp_path / "ok.csv", [
        "POST,/v1/chat/completions,1200,0,210,230,190,900,300,20.0,0,210,220,230,240,260,310,400,520,800,900,900",
        ",Aggregated,1200,0,210,230,190,900,300,20.0,0,210,220,230,240,260,310,400,520,800,900,900",
    ])  # fmt: skip
    assert run.print_table(ok, tmp_path / "none.csv", 60, 100, sampler) == 0
    out = capsys.readouterr().out
    assert "p50 ms" in out and "p95 ms" in out and "p99 ms" in out
    assert "POST /v1/chat/completions" in out and "310" in out and "520" in out
    assert "SLO met: 0 errors" in out
    assert "web (daphne x2)" in out  # the daphne processes that served (WEB_PROCESSES)
    failing = _csv(tmp_path / "bad.csv", [
        "WS,WS /ws/ask/ (answer),10,2,210,230,190,900,300,1.0,0,210,220,230,240,260,310,400,520,800,900,900",
        ",Aggregated,10,2,210,230,190,900,300,1.0,0,210,220,230,240,260,310,400,520,800,900,900",
    ])  # fmt: skip
    assert run.print_table(failing, tmp_path / "none.csv", 60, 100, sampler) == 1
    assert "errors: 2" in capsys.readouterr().out
