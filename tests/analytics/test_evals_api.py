"""/api/v1/datasets, /api/v1/eval-cases and /api/v1/eval-runs: admin scope, another org's objects are 404, the
import is all or nothing, a run is queued and read back case by case."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from analytics import tasks
from analytics.models import EvalCase, EvalDataset, EvalRun
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.analytics.factories import EvalCaseFactory, EvalDatasetFactory, EvalResultFactory, EvalRunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def org():
    return OrganizationFactory()


@pytest.fixture
def admin(org):
    return key_client(issue_key(org, scopes=["read", "admin"]).secret)


def test_datasets_need_the_admin_scope(org):
    reader = key_client(issue_key(org, scopes=["read", "ask"]).secret)
    EvalDatasetFactory(organization=org)
    for method, path in (("get", "/api/v1/datasets"), ("post", "/api/v1/datasets"), ("get", "/api/v1/eval-runs"),
                         ("post", "/api/v1/eval-cases")):  # fmt: skip
        response = getattr(reader, method)(path, {}, format="json")
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "missing_scope"


def test_create_list_update_and_delete_a_dataset(admin, org):
    created = admin.post("/api/v1/datasets", {"name": "Refunds", "max_drop": 0.1}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["prompt_key"] == "ask.system" and body["max_drop"] == 0.1 and body["case_count"] == 0
    assert admin.post("/api/v1/datasets", {"name": "refunds"}, format="json").status_code == 409
    assert admin.post("/api/v1/datasets", {"name": "Other", "max_drop": 2}, format="json").status_code == 400
    refused = admin.post("/api/v1/datasets", {"name": "Other", "max_drop": False}, format="json")  # JSON false: not 0
    assert refused.status_code == 400 and refused.json()["error"]["details"]["fields"]["max_drop"]
    empty = admin.get("/api/v1/eval-runs?dataset=")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid"
    assert admin.get("/api/v1/insights?start=").status_code == 400
    assert admin.post("/api/v1/datasets", {"name": "X", "colour": "red"}, format="json").status_code == 400
    listed = admin.get("/api/v1/datasets").json()["results"]
    assert [d["name"] for d in listed] == ["Refunds"]
    patched = admin.patch(f"/api/v1/datasets/{body['id']}", {"max_drop": 0.2}, format="json")
    assert patched.status_code == 200 and patched.json()["max_drop"] == 0.2
    assert admin.delete(f"/api/v1/datasets/{body['id']}").status_code == 204
    assert not EvalDataset.objects.for_org(org).exists()


def test_cases_written_imported_and_refused(admin, org):
    dataset = EvalDatasetFactory(organization=org)
    made = admin.post("/api/v1/eval-cases", {"dataset": str(dataset.pk), "input": "How long do refunds take?",
                                             "expected_answer": "30 days"}, format="json")  # fmt: skip
    assert made.status_code == 201, made.content
    case = made.json()
    assert case["source"] == "manual" and case["match"] == "contains"
    bad = admin.post("/api/v1/eval-cases", {"dataset": str(dataset.pk), "input": "Q", "expected_answer": "(",
                                            "match": "regex"}, format="json")  # fmt: skip
    assert bad.status_code == 400 and "regular expression" in bad.json()["error"]["message"]
    patched = admin.patch(f"/api/v1/eval-cases/{case['id']}", {"rubric": "Says 30 days."}, format="json")
    assert patched.json()["rubric"] == "Says 30 days." and patched.json()["expected_answer"] == "30 days"

    good = "\n".join(json.dumps({"input": f"Question {n}?"}) for n in range(3)).encode()
    imported = admin.post(f"/api/v1/datasets/{dataset.pk}/import",
                          {"file": SimpleUploadedFile("cases.jsonl", good)}, format="multipart")  # fmt: skip
    assert imported.status_code == 201 and imported.json()["imported"] == 3
    wrong = b'{"input": "fine"}\n{"input": \n{"nope": 1}\n'
    refused = admin.post(f"/api/v1/datasets/{dataset.pk}/import",
                         {"file": SimpleUploadedFile("cases.jsonl", wrong)}, format="multipart")  # fmt: skip
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "import_refused" and [e["line"] for e in error["details"]["lines"]] == [2, 3]
    cases = admin.get(f"/api/v1/datasets/{dataset.pk}/cases").json()["results"]
    assert len(cases) == 4
    assert admin.delete(f"/api/v1/eval-cases/{case['id']}").status_code == 204
    assert EvalCase.objects.for_org(org).count() == 3


def test_a_run_is_queued_and_read_back_with_its_results_and_a_diff(
    admin, org, monkeypatch, django_capture_on_commit_callbacks
):
    dataset = EvalDatasetFactory(organization=org)
    case = EvalCaseFactory(organization=org, dataset=dataset)
    queued = []
    monkeypatch.setattr(tasks.eval_run, "delay", lambda *args: queued.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        started = admin.post("/api/v1/eval-runs", {"dataset": str(dataset.pk)}, format="json")
    assert started.status_code == 202, started.content
    run = started.json()
    assert run["status"] == "queued" and run["prompt_key"] == "ask.system" and run["prompt_version"] == 1
    assert queued == [(str(org.pk), run["id"])]
    before = EvalRunFactory(organization=org, dataset=dataset, scores={"groundedness": 1.0})
    after = EvalRunFactory(organization=org, dataset=dataset, scores={"groundedness": 0.0})
    EvalResultFactory(organization=org, run=before, case=case, scores={"groundedness": 1.0}, passed=True)
    EvalResultFactory(organization=org, run=after, case=case, scores={"groundedness": 0.0}, answer="No.")
    results = admin.get(f"/api/v1/eval-runs/{after.pk}/results").json()
    assert results["results"][0]["answer"] == "No." and results["results"][0]["input"] == case.input
    diff = admin.get(f"/api/v1/eval-runs/{after.pk}/diff", {"against": str(before.pk)}).json()
    assert diff["scores"]["groundedness"] == {"base": 1.0, "run": 0.0}
    assert diff["cases"][0]["verdict"] == "regressed"
    assert admin.get(f"/api/v1/eval-runs/{after.pk}/diff", {"against": "nope"}).status_code == 400
    listed = admin.get("/api/v1/eval-runs", {"dataset": str(dataset.pk)}).json()["results"]
    assert len(listed) == 3
    text = admin.post("/api/v1/eval-runs", {"dataset": str(dataset.pk), "text": "Answer and cite."}, format="json")
    assert text.status_code == 202 and text.json()["version"] is None
    assert EvalRun.objects.for_org(org).get(pk=text.json()["id"]).system_prompt == "Answer and cite."


def test_another_orgs_datasets_cases_and_runs_are_404(admin, org):
    theirs = OrganizationFactory()
    dataset = EvalDatasetFactory(organization=theirs)
    case = EvalCaseFactory(organization=theirs, dataset=dataset)
    run = EvalRunFactory(organization=theirs, dataset=dataset)
    mine = EvalRunFactory(organization=org)
    for method, path in (
        ("get", f"/api/v1/datasets/{dataset.pk}"), ("patch", f"/api/v1/datasets/{dataset.pk}"),
        ("delete", f"/api/v1/datasets/{dataset.pk}"), ("get", f"/api/v1/datasets/{dataset.pk}/cases"),
        ("post", f"/api/v1/datasets/{dataset.pk}/import"), ("get", f"/api/v1/eval-cases/{case.pk}"),
        ("patch", f"/api/v1/eval-cases/{case.pk}"), ("delete", f"/api/v1/eval-cases/{case.pk}"),
        ("get", f"/api/v1/eval-runs/{run.pk}"), ("get", f"/api/v1/eval-runs/{run.pk}/results"),
        ("get", f"/api/v1/eval-runs/{mine.pk}/diff?against={run.pk}"),
    ):  # fmt: skip
        response = getattr(admin, method)(path, {}, format="json") if method != "get" else admin.get(path)
        assert response.status_code == 404, (method, path, response.status_code)
        assert str(theirs.pk) not in response.content.decode()
    # Writing into their dataset, or running it, is a 404 too, and leaves nothing behind.
    assert (
        admin.post("/api/v1/eval-cases", {"dataset": str(dataset.pk), "input": "Q"}, format="json").status_code == 404
    )
    assert admin.post("/api/v1/eval-runs", {"dataset": str(dataset.pk)}, format="json").status_code == 404
    assert EvalCase.all_orgs.filter(dataset=dataset).count() == 1
    assert EvalRun.all_orgs.filter(dataset=dataset).count() == 1
    assert [d["id"] for d in admin.get("/api/v1/datasets").json()["results"]] == [str(mine.dataset_id)]
