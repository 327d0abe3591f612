# syntax=docker/dockerfile:1
# Stage 1: build wheels for the pinned dependencies (compilers stay out of the runtime image).
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml constraints.txt README.md ./
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -c constraints.txt .

# Stage 2: the runtime image, run as an unprivileged user.
FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=saas.settings.production \
    CELERY_BEAT_SCHEDULE_FILENAME=/tmp/celerybeat-schedule \
    STATIC_ROOT=/app/staticfiles \
    MEDIA_ROOT=/data/media
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 crewdesk \
    && useradd --system --uid 10001 --gid crewdesk --home /app crewdesk \
    && mkdir -p /data/media && chown crewdesk:crewdesk /data/media
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=crewdesk:crewdesk . .
# collectstatic needs settings but no database or secrets of the real deployment: a throwaway build key.
RUN SECRET_KEY=collectstatic-only-build-time-key-000000000000000000000000 \
    DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    LLM_ENCRYPTION_KEYS=build-time-only-not-a-real-key \
    python manage.py collectstatic --noinput
# The local embedding model as ONNX, fp32 and the int8 passage build (saas/llm/embeddings.py), made at build time:
# the root is read-only at run time.
RUN python -m saas.llm.embeddings
# Numeric, so Kubernetes' runAsNonRoot can verify it (deploy/k8s runs as 10001:10001 with a read-only root).
USER 10001:10001
EXPOSE 8000 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
# daphne in WEB_PROCESSES processes on the one port (default: the cores the container may use, its CPU limit included).
CMD ["python", "-m", "saas.core.http_server", "-b", "0.0.0.0", "-p", "8000", "saas.asgi:application"]
