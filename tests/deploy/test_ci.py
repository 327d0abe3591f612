"""The GitHub Actions workflow: lint, the tests as `make test`, the image built and checked, the manifests
validated; every action pinned; every make target and path it names exists."""

import re

import yaml

from tests.deploy.conftest import BASE_DIR

WORKFLOW = yaml.safe_load((BASE_DIR / ".github" / "workflows" / "ci.yml").read_text())
MAKEFILE = (BASE_DIR / "Makefile").read_text()


def _runs(job: str) -> str:
    return "\n".join(step.get("run", "") for step in WORKFLOW["jobs"][job]["steps"])


def _uses(job: str) -> list[str]:
    return [step["uses"] for step in WORKFLOW["jobs"][job]["steps"] if "uses" in step]


def test_the_workflow_lints_tests_builds_and_validates():
    assert "make lint" in _runs("lint")
    assert re.search(r"^make test\b", _runs("test"), flags=re.MULTILINE)
    assert any(u.startswith("docker/build-push-action@") for u in _uses("image"))
    assert "tests/deploy" in _runs("manifests") and "kubectl kustomize" in _runs("manifests")
    assert WORKFLOW["permissions"] == {"contents": "read"}  # least privilege; release alone may write packages


def test_every_make_target_it_calls_exists():
    for job in WORKFLOW["jobs"]:
        for target in re.findall(r"\bmake (\w+)", _runs(job)):
            assert re.search(rf"^{target}:", MAKEFILE, flags=re.MULTILINE), f"{job}: make {target}"


def test_every_action_is_pinned_to_a_version():
    for job in WORKFLOW["jobs"]:
        for uses in _uses(job):
            assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+(\.\d+)*", uses), uses


def test_every_kustomization_it_renders_exists():
    for job in WORKFLOW["jobs"]:
        for target in re.findall(r"deploy/k8s/[\w/$\"{}]+", _runs(job)):
            if "$" not in target:
                assert (BASE_DIR / target).exists(), target
    for target in ("base", "overlays/dev", "overlays/production"):
        assert (BASE_DIR / "deploy" / "k8s" / target / "kustomization.yaml").is_file()


def test_make_loadtest_runs_the_locust_driver_with_configurable_users_and_duration():
    assert re.search(r"^loadtest:", MAKEFILE, flags=re.MULTILINE)
    assert "deploy/loadtest/run.py --users $(LOADTEST_USERS) --duration $(LOADTEST_DURATION)" in MAKEFILE
    assert (BASE_DIR / "deploy" / "loadtest" / "locustfile.py").is_file()
