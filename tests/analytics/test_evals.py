"""Eval datasets and cases: a thumbs-down or a request-log row becomes a case in one click (once), and a CSV or
JSONL import is all or nothing, with every wrong line named."""

import json

import pytest

from accounts import permissions
from accounts.models import Membership
from analytics import evals
from analytics.models import EvalCase, EvalDataset
from saas.core.errors import ApplicationError, NotFound, PermissionDenied
from saas.llm import services as llm_services
from saas.llm.models import LLMCall
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.agents.factories import FeedbackFactory
from tests.documents.factories import DocumentFactory

pytestmark = pytest.mark.django_db


def test_a_thumbs_down_becomes_a_case_with_its_question_and_comment_once(team):
    feedback = team.thumbs_down("How long do refunds take?", "It should say when the email arrives.")
    case, created = evals.case_from_feedback(principal=team.principal, feedback_id=feedback.pk)
    assert created and case.source == EvalCase.Source.FEEDBACK and case.feedback_id == feedback.pk
    assert case.input == "How long do refunds take?"
    assert case.note == "It should say when the email arrives."
    assert case.dataset.name == "Thumbs-down" and case.llm_call_id == feedback.llm_call_id
    again, created_again = evals.case_from_feedback(principal=team.principal, feedback_id=feedback.pk)
    assert again.pk == case.pk and not created_again
    assert EvalCase.objects.for_org(team.org).count() == 1
    # Stored encrypted, like the ledger's prompts.
    raw = EvalCase.all_orgs.filter(pk=case.pk).values_list("input_encrypted", "note_encrypted").get()
    assert "refunds" not in raw[0] and "email" not in raw[1]


def test_only_a_thumbs_down_of_this_team_becomes_a_case_and_only_for_who_may_read_stored_prompts(team):
    up = FeedbackFactory(organization=team.org, rating=1)
    with pytest.raises(ApplicationError, match="Only a thumbs-down"):
        evals.case_from_feedback(principal=team.principal, feedback_id=up.pk)
    theirs = FeedbackFactory(organization=OrganizationFactory(), rating=-1)
    with pytest.raises(NotFound):
        evals.case_from_feedback(principal=team.principal, feedback_id=theirs.pk)
    feedback = team.thumbs_down("How long do refunds take?", "")
    owner = permissions.principal_for_member(MembershipFactory(organization=team.org, role=Membership.Role.OWNER))
    llm_services.prompt_visibility_set(principal=owner, visibility="nobody")
    with pytest.raises(PermissionDenied):
        evals.case_from_feedback(principal=team.principal, feedback_id=feedback.pk)
    assert not EvalCase.objects.for_org(team.org).exists()


def test_a_request_log_row_becomes_a_case_in_the_chosen_dataset(team):
    feedback = team.thumbs_down("Where can staff park?", "Missing the lot's name.")
    dataset = evals.dataset_create(org=team.org, user=team.admin.user, name="Parking")
    case, created = evals.case_from_call(principal=team.principal, call_id=feedback.llm_call_id, dataset_id=dataset.pk)
    assert created and case.dataset == dataset and case.source == EvalCase.Source.REQUEST
    assert case.input == "Where can staff park?" and case.note == "Missing the lot's name."
    assert evals.case_from_call(principal=team.principal, call_id=feedback.llm_call_id,
                                dataset_id=dataset.pk)[0].pk == case.pk  # fmt: skip
    embedding = LLMCall.objects.for_org(team.org).filter(feature="ingest").first()
    with pytest.raises(ApplicationError, match="ask or a chat turn"):
        evals.case_from_call(principal=team.principal, call_id=embedding.pk, dataset_id=dataset.pk)


def _jsonl(*rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


def test_a_jsonl_import_makes_every_case(team):
    dataset = evals.dataset_create(org=team.org, user=team.admin.user, name="Imported")
    data = _jsonl(
        {"input": "How long do refunds take?", "expected_answer": "30 days", "expected_document": "handbook.pdf"},
        {"input": "When does the office open?", "expected_answer": r"\b8 ?am\b", "match": "regex",
         "collection": "Documents"},
        "",
        {"input": "Refund days as JSON", "json_schema": {"type": "object"}, "rubric": "Says 30."},
    )  # fmt: skip
    cases = evals.cases_import(org=team.org, user=team.admin.user, dataset_id=dataset.pk, data=data,
                               filename="cases.jsonl")  # fmt: skip
    assert len(cases) == 3
    stored = list(EvalCase.objects.for_org(team.org).filter(dataset=dataset))
    assert [c.input for c in stored] == [
        "How long do refunds take?", "When does the office open?", "Refund days as JSON",
    ]  # fmt: skip
    assert stored[0].expected_document_id == team.handbook.pk and stored[1].match == "regex"
    assert stored[1].collection.name == "Documents" and stored[2].json_schema == {"type": "object"}


def test_a_csv_import_reads_its_header(team):
    dataset = evals.dataset_create(org=team.org, user=team.admin.user, name="CSV")
    data = (b"input,expected_answer,match,note\n"
            b'"How long do refunds take?","30 days",contains,"from a ticket, with a comma"\n'
            b"When does the office open?,8 am,,\n")  # fmt: skip
    cases = evals.cases_import(org=team.org, user=team.admin.user, dataset_id=dataset.pk, data=data, filename="x.csv")
    assert [(c.input, c.expected_answer, c.note) for c in cases] == [
        ("How long do refunds take?", "30 days", "from a ticket, with a comma"),
        ("When does the office open?", "8 am", ""),
    ]


def test_a_file_with_a_wrong_line_imports_nothing_and_names_each_wrong_line(team):
    dataset = evals.dataset_create(org=team.org, user=team.admin.user, name="Strict")
    data = _jsonl(
        {"input": "How long do refunds take?"},
        '{"input": "unterminated',
        {"input": ""},
        {"input": "Q", "match": "fuzzy", "expected_document": "no-such-file.pdf"},
        ["not", "an", "object"],
        {"input": "Q", "json_schema": {"type": "no-such-type"}, "colour": "blue"},
    )
    with pytest.raises(evals.ImportRefused) as refused:
        evals.cases_import(org=team.org, user=team.admin.user, dataset_id=dataset.pk, data=data, filename="c.jsonl")
    lines = {e["line"]: e["message"] for e in refused.value.details["lines"]}
    assert sorted(lines) == [2, 3, 4, 5, 6]
    assert "not JSON" in lines[2] and "input (the question) is empty" in lines[3]
    assert "match is one of" in lines[4] and "expected_document" in lines[4]
    assert lines[5] == "not a JSON object"
    assert "json_schema" in lines[6] and "unknown field: colour" in lines[6]
    assert "Nothing was imported: 5 lines are wrong" in refused.value.message
    assert not EvalCase.objects.for_org(team.org).exists()


def test_oversized_and_hostile_files_are_refused_whole(team):
    dataset = evals.dataset_create(org=team.org, user=team.admin.user, name="Hostile")

    def refused(data: bytes, filename: str = "c.jsonl") -> evals.ImportRefused:
        with pytest.raises(evals.ImportRefused) as caught:
            evals.cases_import(org=team.org, user=team.admin.user, dataset_id=dataset.pk, data=data,
                               filename=filename)  # fmt: skip
        return caught.value

    too_big = refused(b"{}" * (evals.IMPORT_MAX_BYTES // 2 + 1))
    assert too_big.status == 413 and too_big.code == "too_large"
    assert refused(b"\xff\xfe\x00binary").code == "not_text"
    assert refused(_jsonl(*[{"input": f"Q{i}"} for i in range(evals.IMPORT_MAX_ROWS + 1)])).code == "too_many_rows"
    deep = refused(b"[" * 100_000 + b"]" * 100_000)
    assert "too deep" in deep.details["lines"][0]["message"]
    nul = refused(_jsonl({"input": "How long\u0000 do refunds take?"}))
    assert "NUL" in nul.details["lines"][0]["message"]
    # Another team's document is no document of this team.
    foreign = DocumentFactory(organization=OrganizationFactory())
    other = refused(_jsonl({"input": "Q", "expected_document": str(foreign.pk)}))
    assert "no document of this team" in other.details["lines"][0]["message"]
    assert refused(b"question,answer\nQ,A\n", filename="c.csv").details["lines"][0]["message"].startswith("no input")
    assert refused(_jsonl({"input": "Q", "expected_answer": "(" * 600, "match": "regex"})).details["lines"]
    assert not EvalCase.objects.for_org(team.org).exists()


def test_a_dataset_holds_at_most_its_limit(team, monkeypatch):
    monkeypatch.setattr(evals, "MAX_CASES", 2)
    dataset = evals.dataset_create(org=team.org, user=team.admin.user, name="Small")
    evals.cases_import(org=team.org, user=team.admin.user, dataset_id=dataset.pk,
                       data=_jsonl({"input": "A"}, {"input": "B"}))  # fmt: skip
    with pytest.raises(ApplicationError, match="at most 2 cases"):
        evals.case_create(org=team.org, user=team.admin.user, dataset_id=dataset.pk, data={"input": "C"})


def test_dataset_names_and_thresholds_are_checked(team):
    evals.dataset_create(org=team.org, user=None, name="Refunds")
    with pytest.raises(ApplicationError, match="already a dataset"):
        evals.dataset_create(org=team.org, user=None, name="refunds")
    with pytest.raises(ApplicationError, match="from 0 to 1"):
        evals.dataset_create(org=team.org, user=None, name="Other", max_drop=5)
    assert EvalDataset.objects.for_org(team.org).count() == 1


def test_a_members_questions_in_cases_are_erased_with_them_and_exported_with_their_data(team):
    from analytics import privacy
    from saas.core.privacy import Subject

    feedback = team.thumbs_down("How long do refunds take?", "Wrong number.")
    theirs, _ = evals.case_from_feedback(principal=team.principal, feedback_id=feedback.pk)
    written = evals.case_create(org=team.org, user=team.admin.user, dataset_id=theirs.dataset_id,
                                data={"input": "Where can staff park?"})  # fmt: skip

    class Sink:
        files: dict = {}

        def json(self, path, data):
            self.files[path] = data

    sink = Sink()
    privacy.export_user(sink=sink, user_id=team.member.user_id, org_id=team.org.pk, folder="me")
    assert [c["input"] for c in sink.files["me/eval_cases.json"]] == ["How long do refunds take?"]
    subject = Subject(user_id=team.member.user_id, org_id=team.org.pk, pseudonym="Former member", texts=(),
                      transfer_content=True)  # fmt: skip
    while privacy.erase_user(subject=subject, batch_size=10):
        pass
    assert list(EvalCase.objects.for_org(team.org).values_list("pk", flat=True)) == [written.pk]
