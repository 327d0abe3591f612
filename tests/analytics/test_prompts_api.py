"""`/api/v1/prompts` and `/api/v1/experiments`: versions, labels and experiments through the API, scoped to the
key's org (another org's objects are 404) and to its scopes (reading needs `read`, changing needs `admin`)."""

import pytest

from saas.llm import prompt_experiments, prompts
from saas.llm.models import Prompt
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def org(db):
    return OrganizationFactory()


@pytest.fixture
def admin(org):
    return key_client(issue_key(org, scopes=["read", "admin"]).secret)


@pytest.fixture
def reader(org):
    return key_client(issue_key(org, scopes=["read"]).secret)


def test_list_shows_every_builtin_key_with_its_production_version(reader):
    body = reader.get("/api/v1/prompts").json()
    rows = {row["key"]: row for row in body["results"]}
    assert {"ask.system", "chat.system", "crew.manager", "crew.agent"} <= set(rows)
    assert rows["ask.system"]["production"]["owner"] == "default" and rows["ask.system"]["overridden"] is False


def test_an_admin_adds_a_version_sees_its_diff_and_labels_it(org, admin, reader):
    created = admin.post("/api/v1/prompts/ask.system/versions",
                         {"text": "Answer only from the sources.\nCite them like [1].", "note": "shorter",
                          "parameters": {"temperature": 0.2}}, format="json")  # fmt: skip
    assert created.status_code == 201, created.content
    version = created.json()
    assert (version["number"], version["owner"], version["labels"]) == (1, "org", [])
    detail = reader.get(f"/api/v1/prompt-versions/{version['id']}").json()
    assert detail["previous"] == str(Prompt.all_orgs.get(organization__isnull=True, key="ask.system").production_id)
    assert "+Answer only from the sources." in detail["diff"] and "-Answer the question using only" in detail["diff"]
    labelled = admin.post(f"/api/v1/prompt-versions/{version['id']}/label", {"label": "production"}, format="json")
    assert labelled.status_code == 200, labelled.content
    assert labelled.json()["production"] == {"id": version["id"], "number": 1, "owner": "org"}
    versions = reader.get("/api/v1/prompts/ask.system/versions").json()["results"]
    assert [(v["owner"], v["number"], v["labels"]) for v in versions] == [
        ("org", 1, ["production"]), ("default", 1, ["staging"])
    ]  # fmt: skip


def test_versions_cannot_be_edited_through_the_api(admin):
    version = admin.post("/api/v1/prompts/chat.system/versions", {"text": "Be brief."}, format="json").json()
    for method in ("put", "patch", "delete"):
        response = getattr(admin, method)(f"/api/v1/prompt-versions/{version['id']}", {"text": "x"}, format="json")
        assert response.status_code == 405


def test_bad_input_is_refused_in_the_one_error_shape(admin):
    too_hot = admin.post("/api/v1/prompts/ask.system/versions", {"text": "x", "parameters": {"temperature": 9}},
                         format="json")  # fmt: skip
    assert too_hot.status_code == 400 and too_hot.json()["error"]["code"] == "invalid"
    unknown = admin.post("/api/v1/prompts/no.such/versions", {"text": "x"}, format="json")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    model = admin.post("/api/v1/prompts/ask.system/versions", {"text": "x", "model": "no-such-model"}, format="json")
    assert model.status_code == 400


def test_a_read_key_may_read_but_not_change(org, reader):
    assert reader.get("/api/v1/prompts/ask.system").status_code == 200
    refused = reader.post("/api/v1/prompts/ask.system/versions", {"text": "x"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_scope"
    default = Prompt.all_orgs.get(organization__isnull=True, key="ask.system").production
    assert reader.post(f"/api/v1/prompt-versions/{default.pk}/label", {"label": "staging"},
                       format="json").status_code == 403  # fmt: skip
    assert reader.post("/api/v1/experiments", {}, format="json").status_code == 403


def test_another_orgs_versions_and_experiments_are_404(org, admin):
    stranger = OrganizationFactory()
    theirs = prompts.prompt_version_create(org=stranger, key="ask.system", text="Their secret rules.")
    prompts.prompt_label_set(org=stranger, version=theirs)
    experiment = prompt_experiments.experiment_start(
        org=stranger, key="ask.system", name="Their test",
        versions=[Prompt.all_orgs.get(organization__isnull=True, key="ask.system").production, theirs],
    )  # fmt: skip
    for path in (f"/api/v1/prompt-versions/{theirs.pk}", f"/api/v1/experiments/{experiment.pk}"):
        response = admin.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert admin.post(f"/api/v1/prompt-versions/{theirs.pk}/label", {"label": "production"},
                      format="json").status_code == 404  # fmt: skip
    assert admin.post(f"/api/v1/experiments/{experiment.pk}/end", {}, format="json").status_code == 404
    started = admin.post("/api/v1/experiments", {"key": "ask.system", "name": "Mine", "versions": [
        str(Prompt.all_orgs.get(organization__isnull=True, key="ask.system").production_id), str(theirs.pk)]},
        format="json")  # fmt: skip
    assert started.status_code == 404
    listed = admin.get("/api/v1/prompts/ask.system/versions").content.decode()
    assert str(theirs.pk) not in listed and "Their secret rules" not in listed
    assert str(experiment.pk) not in admin.get("/api/v1/experiments").content.decode()
    # Their override never changes what this org uses.
    assert prompts.prompt_resolve(org=org, key="ask.system").source == "default"


def test_an_experiment_through_the_api(org, admin, reader):
    default = Prompt.all_orgs.get(organization__isnull=True, key="ask.system").production
    mine = admin.post("/api/v1/prompts/ask.system/versions", {"text": "Cite [n]."}, format="json").json()
    created = admin.post("/api/v1/experiments", {"key": "ask.system", "name": "Cite more", "min_samples": 10,
                                                 "versions": [str(default.pk), mine["id"]]}, format="json")  # fmt: skip
    assert created.status_code == 201, created.content
    body = created.json()
    assert [(v["name"], v["weight"], v["calls"]) for v in body["variants"]] == [("A", 50, 0), ("B", 50, 0)]
    assert body["enough_data"] is False and body["variants"][1]["versus_control"] is None
    again = admin.post("/api/v1/experiments", {"key": "ask.system", "name": "Twice",
                                               "versions": [str(default.pk), mine["id"]]}, format="json")  # fmt: skip
    assert again.status_code == 409 and again.json()["error"]["code"] == "experiment_running"
    assert [e["name"] for e in reader.get("/api/v1/experiments").json()["results"]] == ["Cite more"]
    assert reader.get(f"/api/v1/experiments/{body['id']}").json()["status"] == "running"
    winner = body["variants"][1]["id"]
    ended = admin.post(f"/api/v1/experiments/{body['id']}/end", {"winner": winner}, format="json")
    assert ended.status_code == 200 and ended.json()["status"] == "ended" and ended.json()["winner"] == winner
    assert prompts.prompt_resolve(org=org, key="ask.system").version_id == Prompt.all_orgs.get(
        organization=org, key="ask.system").production_id  # fmt: skip
    assert admin.post(f"/api/v1/experiments/{body['id']}/end", {}, format="json").status_code == 409


def test_a_refused_promotion_is_a_409_with_the_reason(org, admin):
    version = admin.post("/api/v1/prompts/ask.system/versions", {"text": "Worse."}, format="json").json()

    def gate(*, org, version, principal):
        raise prompts.PromotionRefused("Scores dropped on the handbook dataset.", details={"dataset": "handbook"})

    prompts.register_promotion_check(gate)
    try:
        response = admin.post(f"/api/v1/prompt-versions/{version['id']}/label", {"label": "production"},
                              format="json")  # fmt: skip
    finally:
        prompts._promotion_checks.remove(gate)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "promotion_refused"
    assert response.json()["error"]["details"] == {"dataset": "handbook"}
