"""Crewdesk's API server (saas.core.api_server; with --daphne as its first argument, daphne through
saas.core.http_server), as `make run` starts it, with bench/step_cpu.py's per-step CPU clocks installed: for
quick_cpu.py --steps only, never for serving."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.local")

import step_cpu

import saas.asgi  # noqa: F401  (sets Django up)
from saas.core import api_server, http_server

step_cpu.install()

if __name__ == "__main__":
    if sys.argv[1:2] == ["--daphne"]:
        sys.exit(http_server.main(sys.argv[2:]))
    sys.exit(api_server.main(sys.argv[1:]))
