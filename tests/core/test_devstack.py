"""`make run` end to end: a fresh data dir, the embedded servers, migrate, demo login, daphne + the API server +
worker + beat,
/readyz at 200, then SIGINT (what Ctrl-C sends) leaves no process behind, and a second run reuses the data."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress

import psutil
import pytest

from tests.conftest import BASE_DIR, free_port

pytestmark = pytest.mark.live


def _start(data_dir, port, api_port):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(CREWDESK_DATA_DIR=str(data_dir), PORT=str(port), API_PORT=str(api_port), PYTHONUNBUFFERED="1")
    log = (data_dir.parent / f"run-{port}.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "saas.devstack", "run"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # like a terminal: SIGINT is sent to the runner's group below
    )
    return process, log


def _wait_ready(url, process, log, timeout=150):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, _tail(log)
        with suppress(Exception), urllib.request.urlopen(url + "/readyz", timeout=5) as response:  # noqa: S310
            return json.load(response)
        time.sleep(1)
    raise AssertionError("not ready in time:\n" + _tail(log))


def _tail(log) -> str:
    return _output(log)[-5000:]


def _output(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def _processes_using(data_dir) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "environ"]):
        with suppress(psutil.Error):
            text = " ".join(proc.info["cmdline"] or []) + " " + str(proc.info["cwd"])
            environ = proc.info["environ"] or {}
            if str(data_dir) in text or environ.get("CREWDESK_DATA_DIR") == str(data_dir):
                found.append(f"{proc.info['pid']}: {text}")
    return found


def _interrupt_and_wait(process, log):
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("the runner did not stop on SIGINT:\n" + _tail(log)) from None


def test_make_run_serves_the_stack_and_ctrl_c_leaves_nothing_behind(tmp_path):
    data_dir = tmp_path / "devdata"
    port, api_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"

    process, log = _start(data_dir, port, api_port)
    try:
        body = _wait_ready(url, process, log)
        assert body["status"] == "ok", body
        assert all(body["components"][c]["ok"] for c in ("database", "pgvector", "migrations", "redis", "celery"))
        # The API server answers for developers' clients, on its own port.
        assert _wait_ready(f"http://127.0.0.1:{api_port}", process, log)["status"] == "ok"
    finally:
        _interrupt_and_wait(process, log)
    first_output = _output(log)
    assert "Demo login (shown once): demo@crewdesk.local / " in first_output
    assert f"API for your clients: http://127.0.0.1:{api_port}/v1" in first_output
    for prefix in ("web ", "api ", "worker ", "beat "):
        assert any(line[9:].startswith(prefix) for line in first_output.splitlines()), prefix
    time.sleep(1)
    assert _processes_using(data_dir) == []
    assert not (data_dir / "services.env").exists()

    # A second run finds the same database: the demo user exists, so no new password is printed.
    process, log = _start(data_dir, port, api_port)
    try:
        assert _wait_ready(url, process, log)["status"] == "ok"
    finally:
        _interrupt_and_wait(process, log)
    second_output = _output(log)
    assert "Demo login: demo@crewdesk.local (password was shown when it was created" in second_output
    assert "shown once" not in second_output
    time.sleep(1)
    assert _processes_using(data_dir) == []
