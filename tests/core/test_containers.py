"""Docker cannot run here, so the container files are checked statically: every command must point at code
that exists, and the image must keep the properties production relies on."""

import re
import shlex
from pathlib import Path

import yaml

BASE_DIR = Path(__file__).resolve().parent.parent.parent
COMPOSE = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
DOCKERFILE = (BASE_DIR / "Dockerfile").read_text()


def _module_exists(dotted: str) -> bool:
    path = BASE_DIR.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _referenced_modules(command: list[str]) -> list[str]:
    program = Path(command[0]).name
    if program == "daphne":
        return [command[-1].split(":")[0]]
    if program == "celery":
        app = command[command.index("-A") + 1]
        return [app, f"{app}.celery"]
    if program == "python" and command[1] == "manage.py":
        return ["manage"]
    if program == "python" and command[1] == "-m":
        return [command[2], command[-1].split(":")[0]]  # our daphne entry point, and the ASGI app it serves
    raise AssertionError(f"unknown command {command!r}: teach this test how to check it")


def test_compose_has_the_whole_stack():
    assert {"web", "api", "worker", "beat", "db", "redis"} <= set(COMPOSE["services"])
    assert "pgvector" in COMPOSE["services"]["db"]["image"]


def test_every_service_command_points_at_code_that_exists():
    checked = 0
    for name, service in COMPOSE["services"].items():
        if "build" not in service:
            continue  # third-party images
        command = service["command"]
        command = shlex.split(command) if isinstance(command, str) else command
        for module in _referenced_modules(command):
            assert _module_exists(module), f"service {name}: {module} does not exist"
            checked += 1
    assert checked >= 7


def test_the_app_services_are_wired_by_environment_variables():
    for name in ("web", "api", "worker", "beat"):
        environment = COMPOSE["services"][name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://") and "@db:" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"].startswith("redis://redis:")
        assert environment["DJANGO_SETTINGS_MODULE"] == "saas.settings.production"


def test_dockerfile_is_multi_stage_non_root_with_static_files_and_a_healthcheck():
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", DOCKERFILE, flags=re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert "collectstatic --noinput" in DOCKERFILE
    assert re.search(r"^HEALTHCHECK .*\n?.*?/healthz", DOCKERFILE, flags=re.MULTILINE)
    cmd = re.search(r"^CMD \[(.*)\]", DOCKERFILE, flags=re.MULTILINE)
    assert cmd and "saas.asgi:application" in cmd.group(1)


def test_everything_the_dockerfile_copies_exists():
    for match in re.finditer(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", DOCKERFILE, flags=re.MULTILINE):
        for source in match.group(1).split():
            assert (BASE_DIR / source).exists(), source


def test_optional_services_start_only_with_their_profile():
    services = COMPOSE["services"]
    for name in ("web", "api", "worker", "beat", "migrate", "db", "redis"):
        assert "profiles" not in services[name], name  # `docker compose up` still runs the whole stack
    assert {n for n, s in services.items() if "ollama" in s.get("profiles", [])} == {
        "ollama",
        "ollama-pull",
        "ollama-register",
    }
    assert {n for n, s in services.items() if "s3" in s.get("profiles", [])} == {"minio", "minio-bucket"}


def test_the_ollama_profile_registers_an_openai_compatible_provider_on_the_compose_network():
    register = COMPOSE["services"]["ollama-register"]
    assert register["command"] == ["python", "manage.py", "llm_sync_registry"]
    source, target, _ = register["volumes"][0].split(":")
    assert target == "/app/saas/llm/registry.yaml"  # the file llm_sync_registry reads (saas/llm/registry.py)
    assert (BASE_DIR / "saas" / "llm" / "registry.yaml").is_file()
    registry = yaml.safe_load((BASE_DIR / source).read_text())
    (provider,) = registry["providers"]
    assert provider["kind"] == "openai_compatible" and provider["base_url"] == "http://ollama:11434/v1"
    assert all(model["upstream"] == provider["name"] for model in registry["models"])
    pulled = COMPOSE["services"]["ollama-pull"]["entrypoint"][-1]
    assert {model["upstream_model"] for model in registry["models"]} == {pulled}


def test_the_ollama_registry_file_loads_with_the_apps_own_reader():
    from saas.llm.registry import FIELDS, PROVIDER_FIELDS, provider_entries, registry_entries

    path = BASE_DIR / "deploy" / "compose" / "registry.ollama.yaml"
    for entry in provider_entries(path):
        assert set(entry) - {"name"} <= set(PROVIDER_FIELDS)
    for entry in registry_entries(path):
        assert set(entry) - {"alias"} <= set(FIELDS)


def test_the_s3_profile_gives_the_app_the_storage_settings():
    environment = COMPOSE["services"]["web"]["environment"]
    assert {"STORAGE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(environment)
    assert "minio" in COMPOSE["services"]["minio-bucket"]["depends_on"]
    assert "local/crewdesk" in COMPOSE["services"]["minio-bucket"]["entrypoint"][-1]  # the bucket of the README
