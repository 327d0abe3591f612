"""The evals pages for an admin (a thumbs-down made a case in one click, the import's errors, a run and a
comparison), closed to members; and `manage.py eval_gate` exiting 1 on a drop, 0 on a pass, 2 when it cannot
run, each decision in the audit log."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from analytics import eval_runs, evals, tasks
from analytics.models import EvalCase, EvalRun
from saas.llm import prompts
from tests.analytics.test_eval_runs import WITH_EMAIL_NOTE, WITHOUT_CITATIONS

pytestmark = pytest.mark.django_db


def _client(membership) -> APIClient:
    client = APIClient()
    client.force_login(membership.user)
    return client


def test_an_admin_makes_a_case_from_a_thumbs_down_runs_it_and_compares_runs(
    team, monkeypatch, django_capture_on_commit_callbacks
):
    feedback = team.thumbs_down("How long do refunds take?", "Say when the email is sent.")
    o = f"/o/{team.org.slug}"
    admin = _client(team.admin)
    assert _client(team.member).get(f"{o}/evals/").status_code == 403
    page = admin.get(f"{o}/evals/").content.decode()
    assert "How long do refunds take?" in page and "Say when the email is sent." in page
    assert f"{o}/evals/feedback/{feedback.pk}/case/" in page and "Make an eval case" in page

    made = admin.post(f"{o}/evals/feedback/{feedback.pk}/case/", {"dataset": ""})
    case = EvalCase.objects.for_org(team.org).get(feedback=feedback)
    assert made.status_code == 302 and made["Location"] == f"{o}/evals/datasets/{case.dataset_id}/cases/{case.pk}/"
    assert "Already a case" in admin.get(f"{o}/evals/").content.decode()
    saved = admin.post(made["Location"], {"input": case.input, "expected_answer": "30 days", "match": "contains",
                                          "expected_document": str(team.handbook.pk)})  # fmt: skip
    assert saved.status_code == 302
    dataset_url = f"{o}/evals/datasets/{case.dataset_id}/"

    wrong = SimpleUploadedFile("cases.jsonl", b'{"input": "Where can staff park?"}\n{"input": 7}\n')
    admin.post(f"{dataset_url}import/", {"file": wrong})
    shown = admin.get(dataset_url).content.decode()
    assert "Line 2: input must be text" in shown
    assert EvalCase.objects.for_org(team.org).count() == 1

    queued = []
    monkeypatch.setattr(tasks.eval_run, "delay", lambda *args: queued.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        started = admin.post(f"{dataset_url}run/", {"version": ""})
    run = EvalRun.objects.for_org(team.org).get()
    assert started["Location"] == f"{o}/evals/runs/{run.pk}/" and queued == [(str(team.org.pk), str(run.pk))]
    assert "No case is scored yet" in admin.get(started["Location"]).content.decode()
    tasks.eval_run(*queued[0])
    page = admin.get(started["Location"]).content.decode()
    assert (
        "1 of 1 cases passed" in page and "Refunds take 30 days" in page and "The expected document is cited." in page
    )

    shorter = eval_runs.run_prompt(org=team.org, key="ask.system", text=WITHOUT_CITATIONS)
    worse = eval_runs.eval_run_create(org=team.org, user=None, dataset=run.dataset, prompt=shorter)
    eval_runs.eval_run_execute(org_id=team.org.pk, run_id=worse.pk)
    diff = admin.get(f"{o}/evals/runs/{worse.pk}/diff/", {"against": str(run.pk)}).content.decode()
    assert "regressed" in diff and "1 case stopped passing" in diff


def test_eval_gate_exits_1_on_a_drop_0_on_a_pass_and_2_when_it_cannot_run(team):
    feedback = team.thumbs_down("How long do refunds take?", "")
    case, _ = evals.case_from_feedback(principal=team.principal, feedback_id=feedback.pk)
    evals.case_update(org=team.org, case_id=case.pk, data={"expected_document": str(team.handbook.pk)})
    worse = prompts.prompt_version_create(org=team.org, key="ask.system", text=WITHOUT_CITATIONS)
    better = prompts.prompt_version_create(org=team.org, key="ask.system", text=WITH_EMAIL_NOTE)

    out = io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("eval_gate", "--prompt", "ask.system", "--candidate", str(worse.number), "--org", team.org.slug,
                     stdout=out)  # fmt: skip
    assert refused.value.returncode == 1
    printed = out.getvalue()
    assert "DROP" in printed and "Groundedness" in printed and "failing case" in printed
    assert AuditEvent.objects.for_org(team.org).filter(action="eval.gate_refused").count() == 1

    out = io.StringIO()
    call_command("eval_gate", "--prompt", "ask.system", "--candidate", str(better.number), stdout=out)  # one team
    assert "passes the gate on 1 dataset" in out.getvalue()
    assert AuditEvent.objects.for_org(team.org).filter(action="eval.gate_passed").count() == 1
    # Nothing was promoted by either.
    assert prompts.prompt_resolve(org=team.org, key="ask.system").number == 1

    # The same refusal from the prompt page: the reason and a link to the failing cases, and nothing promoted.
    admin = _client(team.admin)
    refused_page = admin.post(f"/o/{team.org.slug}/prompts/versions/{worse.pk}/label/", {"label": "production"},
                              follow=True).content.decode()  # fmt: skip
    assert "is refused" in refused_page and "1 failing case</a>" in refused_page
    assert f"/o/{team.org.slug}/evals/runs/" in refused_page and "/diff/?against=" in refused_page
    assert AuditEvent.objects.for_org(team.org).filter(action="prompt.promotion_refused").count() == 1
    assert prompts.prompt_resolve(org=team.org, key="ask.system").number == 1

    with pytest.raises(CommandError) as missing:
        call_command("eval_gate", "--prompt", "ask.system", "--candidate", "99", "--org", team.org.slug)
    assert missing.value.returncode == 2
    with pytest.raises(CommandError) as nobody:
        call_command("eval_gate", "--prompt", "ask.system", "--candidate", "1", "--org", "no-such-team")
    assert nobody.value.returncode == 2
