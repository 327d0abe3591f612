"""Crewdesk's HTTP server (saas.core.http_server, as `make run`) with bench/step_cpu.py's per-step CPU clocks
installed: for quick_cpu.py --steps only, never for serving."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.local")

import step_cpu

import saas.asgi  # noqa: F401  (sets Django up)
from saas.core.http_server import LimitedCommandLineInterface

step_cpu.install()

if __name__ == "__main__":
    LimitedCommandLineInterface.entrypoint()
