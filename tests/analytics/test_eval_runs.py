"""Eval runs on the local engine, through the real ask path: a thumbs-down's case is answered and scored, a
prompt that drops the citation instruction scores worse, runs are idempotent, two runs are compared case by
case, and the gate refuses the worse version and lets the better one through."""

import pytest

from accounts.models import AuditEvent
from analytics import eval_runs, evals, gate, tasks
from analytics.models import EvalCase, EvalResult, EvalRun
from documents.services import ANSWER_RULES
from saas.llm import prompts
from saas.llm.models import LLMCall

pytestmark = pytest.mark.django_db

# The production instructions, and a "simplified" version that no longer asks for citations.
WITHOUT_CITATIONS = (
    "Answer the question using only the numbered sources below. If the sources do not contain the answer, say "
    "that you could not find it in the documents. Do not use outside knowledge."
)
WITH_EMAIL_NOTE = ANSWER_RULES + " Mention when the customer is told."


def _dataset(team, **extra):
    feedback = team.thumbs_down("How long do refunds take?", "Should say when the email is sent.")
    case, _ = evals.case_from_feedback(principal=team.principal, feedback_id=feedback.pk)
    evals.case_update(org=team.org, case_id=case.pk, data={
        "expected_document": str(team.handbook.pk), "expected_answer": "30 days"})  # fmt: skip
    parking = {"input": "Where can staff park?", "expected_answer": "north lot"}
    parking["expected_document"] = str(team.office.pk)
    evals.case_create(org=team.org, user=team.admin.user, dataset_id=case.dataset_id, data=parking)
    dataset = case.dataset
    for name, value in extra.items():
        setattr(dataset, name, value)
    dataset.save()
    return dataset


def _text(team, text):
    return eval_runs.run_prompt(org=team.org, key="ask.system", text=text)


def _run(team, dataset, text):
    run = eval_runs.eval_run_create(org=team.org, user=team.admin.user, dataset=dataset, prompt=_text(team, text))
    return eval_runs.eval_run_execute(org_id=team.org.pk, run_id=run.pk)


def test_a_thumbs_down_case_is_answered_and_scored_on_the_local_engine(team):
    dataset = _dataset(team)
    run = _run(team, dataset, ANSWER_RULES)
    assert run.status == EvalRun.Status.SUCCEEDED and run.case_count == 2 and run.passed_count == 2
    results = eval_runs.eval_run_results(org=team.org, run=run)
    refunds = results[0]
    assert refunds.case.source == "feedback" and "Refunds take 30 days" in refunds.answer
    assert refunds.scores == {"cited_document": 1.0, "citations": 1.0, "groundedness": 1.0, "answer": 1.0}
    assert refunds.citations[0]["document_id"] == str(team.handbook.pk) and refunds.passed
    assert run.scores == {"cited_document": 1.0, "citations": 1.0, "groundedness": 1.0, "answer": 1.0}
    # Each answer is a real gateway call, recorded as the eval's, never served from a cache.
    calls = LLMCall.objects.for_org(team.org).filter(pk__in=[r.call_id for r in results])
    assert {(c.feature, c.cache) for c in calls} == {("eval", "bypass")}


def test_a_prompt_without_the_citation_instruction_scores_worse_case_by_case(team):
    dataset = _dataset(team)
    good, worse = _run(team, dataset, ANSWER_RULES), _run(team, dataset, WITHOUT_CITATIONS)
    assert worse.status == EvalRun.Status.SUCCEEDED and worse.passed_count == 0
    assert worse.scores["cited_document"] == 0.0 and worse.scores["groundedness"] == 0.0
    assert worse.scores["answer"] == 1.0  # the words are the same; what they rest on is not shown
    assert "citations" not in worse.scores  # no markers: nothing to check
    diff = eval_runs.eval_run_diff(org=team.org, base=good, other=worse)
    assert diff.scores["groundedness"] == (1.0, 0.0)
    assert [c.verdict for c in diff.cases] == ["regressed", "regressed"]
    assert diff.cases[0].changes["cited_document"] == (1.0, 0.0)


def test_a_run_is_idempotent_and_a_redelivered_one_goes_on_where_it_stopped(team, monkeypatch):
    dataset = _dataset(team)
    production = eval_runs.run_prompt(org=team.org, key="ask.system", text="")  # no text: what production uses
    run = eval_runs.eval_run_create(org=team.org, user=None, dataset=dataset, prompt=production)
    assert run.system_prompt == ANSWER_RULES and run.prompt_version == 1 and run.version_id is not None
    first = EvalResult.objects.for_org(team.org).filter(run=run).count()
    assert first == 0
    # A worker lost after the first case: its result stays, the second delivery scores only the rest.
    case = EvalCase.objects.for_org(team.org).filter(dataset=dataset).order_by("created_at").first()
    partial = eval_runs.score_case(run=run, dataset=dataset, case=case)
    partial.save()
    EvalRun.objects.for_org(team.org).filter(pk=run.pk).update(status=EvalRun.Status.RUNNING)
    asked = []
    real = eval_runs.score_case

    def counted(**kw):
        asked.append(kw["case"].pk)
        return real(**kw)

    monkeypatch.setattr(eval_runs, "score_case", counted)
    assert tasks.eval_run(str(team.org.pk), str(run.pk)) == EvalRun.Status.SUCCEEDED
    assert len(asked) == 1 and asked[0] != case.pk
    assert tasks.eval_run(str(team.org.pk), str(run.pk)) == EvalRun.Status.SUCCEEDED  # finished: nothing again
    assert len(asked) == 1 and EvalResult.objects.for_org(team.org).filter(run=run).count() == 2


def test_starting_a_run_queues_the_task_when_the_transaction_commits(
    team, monkeypatch, django_capture_on_commit_callbacks
):
    dataset = _dataset(team)
    queued = []
    monkeypatch.setattr(tasks.eval_run, "delay", lambda *args: queued.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        run = eval_runs.eval_run_start(org=team.org, user=team.admin.user, dataset_id=dataset.pk)
    assert queued == [(str(team.org.pk), str(run.pk))] and run.status == EvalRun.Status.QUEUED
    empty = evals.dataset_create(org=team.org, user=None, name="Empty")
    with pytest.raises(Exception, match="no cases"):
        eval_runs.eval_run_start(org=team.org, user=None, dataset_id=empty.pk)


def test_the_gate_refuses_the_version_that_drops_citations_and_promotes_the_better_one(team):
    dataset = _dataset(team, max_drop=0.1)
    admin = team.principal
    worse = prompts.prompt_version_create(org=team.org, key="ask.system", text=WITHOUT_CITATIONS,
                                          note="Shorter", principal=admin)  # fmt: skip
    with pytest.raises(prompts.PromotionRefused) as refused:
        prompts.prompt_label_set(org=team.org, version=worse, principal=admin)
    assert "Groundedness fell from 1.00 to 0.00" in refused.value.message
    details = refused.value.details["datasets"][0]
    assert details["name"] == dataset.name
    assert {d["scorer"] for d in details["drops"]} == {"cited_document", "groundedness"}
    assert len(details["failing_cases"]) == 2
    assert prompts.prompt_resolve(org=team.org, key="ask.system").text == ANSWER_RULES  # production unchanged
    event = AuditEvent.objects.for_org(team.org).get(action="prompt.promotion_refused")
    assert event.metadata["details"]["datasets"][0]["drops"]

    better = prompts.prompt_version_create(org=team.org, key="ask.system", text=WITH_EMAIL_NOTE, principal=admin)
    prompts.prompt_label_set(org=team.org, version=better, principal=admin)
    assert prompts.prompt_resolve(org=team.org, key="ask.system").version_id == better.pk
    assert AuditEvent.objects.for_org(team.org).filter(action="prompt.label_set").count() == 1
    # Each decision ran the dataset now, production and candidate side by side, and kept the runs.
    gate_runs = EvalRun.objects.for_org(team.org).filter(purpose="gate")
    assert gate_runs.count() == 4 and gate_runs.filter(version=better, status="succeeded").count() == 1


def test_the_gate_table_names_the_failing_cases_and_a_threshold_lets_a_small_fall_through(team):
    dataset = _dataset(team, max_drop=0.1)
    production = eval_runs.run_prompt(org=team.org, key="ask.system")
    refused = gate.gate_evaluate(org=team.org, user=None, candidate=_text(team, WITHOUT_CITATIONS),
                                 production=production)  # fmt: skip
    table = "\n".join(refused.table())
    assert not refused.allowed and "DROP" in table and "failing case" in table and "How long do refunds take?" in table
    dataset.max_drop = 1.0
    dataset.save()
    lenient = gate.gate_evaluate(org=team.org, user=None, candidate=_text(team, WITHOUT_CITATIONS),
                                 production=production)  # fmt: skip
    assert lenient.allowed and "passes the gate on 1 dataset" in lenient.message
    ungated = gate.gate_evaluate(org=team.org, user=None, candidate=eval_runs.run_prompt(
        org=team.org, key="chat.system", text="Be brief."), production=None)  # fmt: skip
    assert ungated.allowed and ungated.verdicts == [] and "No dataset gates chat.system" in ungated.message
