"""deploy/k8s: every rendered manifest is valid against the Kubernetes schemas (offline, kubernetes-validate) and
keeps the properties the deployment relies on (probes, security, resources, queues, the migration gate)."""

import shlex
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import kustomize
from tests.deploy.conftest import BASE_DIR, K8S, TARGETS

K8S_VERSION = "1.33.0"  # the oldest minor version we promise (sidecar-free, sleep preStop needs 1.30+)
QUEUES = ("ingestion", "crews", "default")


def _by_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def _pod_specs(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        r["metadata"]["name"]: r["spec"]["template"]["spec"] for r in resources if r["kind"] in ("Deployment", "Job")
    }


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_manifest_is_valid_against_the_kubernetes_schema(rendered, target):
    checked = 0
    for resource in rendered[target]:
        if resource["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked by test_keda_scaled_objects_scale_each_worker_on_its_redis_list
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)  # raises on any unknown or wrong field
        checked += 1
    assert checked >= 20


def test_the_secret_template_is_valid_and_holds_no_secret():
    template = yaml.safe_load((K8S / "secret.template.yaml").read_text())
    kubernetes_validate.validate(template, K8S_VERSION, strict=True)
    assert template["stringData"] and all(value == "" for value in template["stringData"].values())
    for target in TARGETS.values():  # never applied by `kubectl apply -k`: it would blank the real Secret
        assert "secret.template.yaml" not in (target / "kustomization.yaml").read_text()


def test_a_schema_violation_is_caught():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.skipif(kustomize.binary() is None, reason="no kustomize or kubectl binary to compare the fallback with")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_python_fallback_renders_what_kustomize_renders(rendered, target):
    def keyed(resources):
        return {(r["kind"], r["metadata"]["name"]): r for r in resources}

    assert keyed(kustomize.render_python(TARGETS[target])) == keyed(rendered[target])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_pods_run_non_root_read_only_with_limits_and_a_writable_tmp(rendered, target):
    for name, spec in _pod_specs(rendered[target]).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the Dockerfile's USER
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"] + spec.get("initContainers", []):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert security["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert security["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, container["name"], kind)
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes  # noqa: S108, (name, container["name"])


def test_the_dockerfile_user_is_the_manifests_user():
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile
    assert "useradd --system --uid 10001" in dockerfile


@pytest.mark.parametrize("tier", ["web", "api"])
def test_web_and_api_have_probes_on_readyz_and_healthz_a_pdb_and_a_cpu_hpa(rendered, tier):
    for target in TARGETS:
        resources = rendered[target]
        web = _by_kind(resources, "Deployment")[f"crewdesk-{tier}"]
        container = web["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # Probes and Prometheus reach the pod by its IP: it must be an allowed host.
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert "$(POD_IP)" in env["ALLOWED_HOSTS"]["value"]
        assert list(env).index("POD_IP") < list(env).index("ALLOWED_HOSTS")  # $(VAR) needs it defined first
        pdb = _by_kind(resources, "PodDisruptionBudget")[f"crewdesk-{tier}"]
        assert pdb["spec"]["selector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]
        hpa = _by_kind(resources, "HorizontalPodAutoscaler")[f"crewdesk-{tier}"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert hpa["spec"]["scaleTargetRef"]["name"] == f"crewdesk-{tier}"
        service = _by_kind(resources, "Service")[f"crewdesk-{tier}"]
        assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
        assert service["spec"]["sessionAffinity"] == "None"  # sticky-free


def test_the_ingress_carries_websockets_to_the_web_service(rendered):
    ingress = _by_kind(rendered["production"], "Ingress")["crewdesk"]
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600  # quiet sockets stay open
    assert not annotations.get("nginx.ingress.kubernetes.io/affinity")
    backends = {p["path"]: p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    # Pages and websockets to daphne; the API to the API server (the longest prefix wins).
    assert backends == {"/": "crewdesk-web", "/v1": "crewdesk-api", "/api": "crewdesk-api"}


def _worker_queues(resources: list[dict[str, Any]]) -> dict[str, list[str]]:
    queues = {}
    for name, spec in _pod_specs(resources).items():
        command = spec["containers"][0]["command"]
        if command[:4] == ["celery", "-A", "saas", "worker"]:
            queues[name] = command[command.index("--queues") + 1].split(",")
    return queues


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_one_worker_deployment_per_queue_and_one_beat_recreated(rendered, target):
    resources = rendered[target]
    assert _worker_queues(resources) == {f"crewdesk-worker-{q}": [q] for q in QUEUES}
    beat = _by_kind(resources, "Deployment")["crewdesk-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert "crewdesk-beat" not in _by_kind(resources, "HorizontalPodAutoscaler")


def test_workers_scale_on_cpu_in_the_base_and_on_their_redis_list_with_keda_in_production(rendered):
    base_hpas = _by_kind(rendered["base"], "HorizontalPodAutoscaler")
    dev_hpas = _by_kind(rendered["dev"], "HorizontalPodAutoscaler")
    prod_hpas = _by_kind(rendered["production"], "HorizontalPodAutoscaler")
    for queue in QUEUES:
        name = f"crewdesk-worker-{queue}"
        assert name in base_hpas and name in dev_hpas
        assert name not in prod_hpas  # KEDA's own HPA would fight a second one


def test_keda_scaled_objects_scale_each_worker_on_its_redis_list(rendered):
    resources = rendered["production"]
    scaled = _by_kind(resources, "ScaledObject")
    auth = _by_kind(resources, "TriggerAuthentication")
    deployments = _by_kind(resources, "Deployment")
    secret_keys = set(yaml.safe_load((K8S / "secret.template.yaml").read_text())["stringData"])
    assert set(scaled) == {f"crewdesk-worker-{q}" for q in QUEUES}
    for obj in scaled.values():
        spec = obj["spec"]
        assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
                             "cooldownPeriod", "fallback", "advanced", "triggers", "idleReplicaCount"}  # fmt: skip
        assert spec["scaleTargetRef"]["name"] in deployments
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]  # never 0: /readyz pings a worker
        (trigger,) = spec["triggers"]
        queue = _worker_queues(resources)[spec["scaleTargetRef"]["name"]]
        assert trigger["type"] == "redis" and [trigger["metadata"]["listName"]] == queue
        assert int(trigger["metadata"]["listLength"]) >= 1
        assert trigger["authenticationRef"]["name"] in auth
    for ref in next(iter(auth.values()))["spec"]["secretTargetRef"]:
        assert ref["name"] == "crewdesk-secrets" and ref["key"] in secret_keys


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_pod_waits_for_the_migrations_the_job_runs(rendered, target):
    resources = rendered[target]
    job = _by_kind(resources, "Job")["crewdesk-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "manage.py",
        "migrate",
        "--noinput",
    ]
    for name, deployment in _by_kind(resources, "Deployment").items():
        (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert "manage.py migrate --check" in init["command"][-1], name


def _module_exists(dotted: str) -> bool:
    path = BASE_DIR.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_every_command_points_at_code_that_exists(rendered):
    checked = 0
    for spec in _pod_specs(rendered["production"]).values():
        for container in spec["containers"] + spec.get("initContainers", []):
            command = container["command"]
            if command[0] == "sh":
                command = shlex.split(command[-1].split(";")[0].removeprefix("until "))
            if command[0] == "celery":
                assert command[command.index("-A") + 1] == "saas" and _module_exists("saas.celery")
            elif command[:2] == ["python", "manage.py"]:
                assert (BASE_DIR / "manage.py").is_file()
            elif command[:2] == ["python", "-m"]:
                assert _module_exists(command[2]) and _module_exists(command[-1].split(":")[0])
            else:
                raise AssertionError(f"unknown command {command!r}: teach this test how to check it")
            checked += 1
    assert checked >= 10


def test_the_same_image_runs_everywhere(rendered):
    for target, expected in (("dev", "crewdesk:dev"), ("production", "ghcr.io/crewdesk/crewdesk:0.1.0")):
        images = {
            c["image"] for spec in _pod_specs(rendered[target]).values()
            for c in spec["containers"] + spec.get("initContainers", [])
        }  # fmt: skip
        assert images == {expected}


def test_network_policies_deny_by_default_and_open_the_web_and_api_ports_only(rendered):
    policies = _by_kind(rendered["production"], "NetworkPolicy")
    deny = policies["crewdesk-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    ingress_rules = [p for p in policies.values() if "ingress" in p["spec"]]
    ports = {p["metadata"]["name"]: p["spec"]["ingress"][0]["ports"] for p in ingress_rules}
    assert ports == {"crewdesk-web-ingress": [{"protocol": "TCP", "port": 8000}],
                     "crewdesk-api-ingress": [{"protocol": "TCP", "port": 8001}]}  # fmt: skip
    deployments = _by_kind(rendered["production"], "Deployment")
    assert deployments["crewdesk-api"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 8001


def test_configmap_values_are_strings_and_name_no_secret(rendered):
    (config,) = _by_kind(rendered["production"], "ConfigMap").values()
    secret_keys = set(yaml.safe_load((K8S / "secret.template.yaml").read_text())["stringData"])
    assert all(isinstance(v, str) for v in config["data"].values())
    assert not secret_keys & set(config["data"])
    assert config["data"]["DJANGO_SETTINGS_MODULE"] == "saas.settings.production"
    assert (BASE_DIR / "saas" / "settings" / "production.py").is_file()
