"""Configuration mistakes stop the boot with one clear line; production settings pass `check --deploy`."""

import subprocess
import sys

from tests.conftest import BASE_DIR, subprocess_env

STRONG_KEY = "k" * 20 + "-production-secret-key-for-the-deploy-check-0123456789"


FERNET_KEY = "kXQmR0D8mAQnSxJpQ2g0Bf2yY4Yw5Yz9k0q6mW3x9s8="


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = subprocess_env(
        DJANGO_SETTINGS_MODULE="saas.settings.production", **{"LLM_ENCRYPTION_KEYS": FERNET_KEY, **env}
    )
    for name in [k for k, v in env.items() if v == "<unset>"]:
        environment.pop(name)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_to_boot_without_a_secret_key():
    result = _manage("check", SECRET_KEY="<unset>")
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "Crewdesk refuses to start: SECRET_KEY is not set (it signs sessions, CSRF tokens and password-reset links)."
    )


def test_production_refuses_a_short_secret_key():
    result = _manage("check", SECRET_KEY="short")
    assert result.returncode != 0
    assert "at least 50" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_refuses_to_boot_without_a_database_url():
    result = _manage("check", SECRET_KEY=STRONG_KEY, DATABASE_URL="<unset>")
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_refuses_to_boot_without_encryption_keys():
    result = _manage("check", SECRET_KEY=STRONG_KEY, LLM_ENCRYPTION_KEYS="<unset>")
    assert result.returncode != 0
    assert "LLM_ENCRYPTION_KEYS is not set" in result.stderr and "Traceback" not in result.stderr


def test_check_deploy_reports_no_warnings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY=STRONG_KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_invalid_log_format_is_a_one_line_error():
    result = _manage("check", SECRET_KEY=STRONG_KEY, LOG_FORMAT="xml")
    assert result.returncode != 0
    assert result.stderr.strip() == "LOG_FORMAT must be 'text' or 'json', not 'xml'"


def test_a_malformed_rate_limit_stops_the_check_with_its_name():
    result = _manage("check", SECRET_KEY=STRONG_KEY, RATE_LIMIT_API_KEY="600 a minute")
    assert result.returncode != 0
    assert "Invalid rate limit '600 a minute'" in result.stderr and "RATE_LIMITS['api_key']" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_endpoint_rate_limit_stops_the_check_with_its_variable():
    result = _manage("check", SECRET_KEY=STRONG_KEY, RATE_LIMIT_ASK_KEY="lots")
    assert result.returncode != 0
    assert "Invalid rate limit 'lots'" in result.stderr and "RATE_LIMIT_ASK_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_closes_metrics_and_trusts_no_proxy_by_default():
    shown = "from django.conf import settings as s; print(s.METRICS_PUBLIC, s.TRUSTED_PROXIES, s.HTTP_REQUEST_TIMEOUT)"
    result = _manage("shell", "-c", shown, SECRET_KEY=STRONG_KEY, METRICS_PUBLIC="<unset>", TRUSTED_PROXIES="<unset>")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["False", "[]", "120.0"]  # after shell's banner


def test_a_malformed_trusted_proxy_stops_the_boot_with_its_name():
    result = _manage("check", SECRET_KEY=STRONG_KEY, TRUSTED_PROXIES="10.0.0.0/8,not-a-network")
    assert result.returncode != 0
    assert "TRUSTED_PROXIES" in result.stderr and "not-a-network" in result.stderr
    assert "Traceback" not in result.stderr
