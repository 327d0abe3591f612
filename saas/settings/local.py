"""`make run` on a developer's machine: debug on, an insecure key that only exists here."""

import os
from pathlib import Path

import environ

# Before the base settings read the environment: a developer's own overrides (.env), then the addresses of the
# embedded servers a running `make run` started, so that `python manage.py shell` talks to that stack.
# Neither overrides a variable that is already set. Production reads the real environment only.
_BASE_DIR = Path(__file__).resolve().parent.parent.parent
for _env_file in (
    _BASE_DIR / ".env",
    Path(os.environ.get("CREWDESK_DATA_DIR") or _BASE_DIR / ".devdata") / "services.env",
):
    if _env_file.is_file():
        environ.Env.read_env(_env_file)

from saas.settings.base import *  # noqa: E402, F403
from saas.settings.base import env  # noqa: E402

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="insecure-local-development-key-never-used-in-production")
# `make run` is a developer's own machine: teams may point their providers at Ollama or vLLM on localhost.
LLM_ORG_PROVIDERS_ALLOW_PRIVATE = env.bool("LLM_ORG_PROVIDERS_ALLOW_PRIVATE", default=True)
