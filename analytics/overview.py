"""What the Overview shows a member: the getting-started checklist (ticked from the team's real data), the
team's recent activity in words, recent crew runs. Reads only; analytics sits above every other app."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Exists, Subquery
from django.urls import reverse

from accounts.audit import action_label
from accounts.models import ApiKey, AuditEvent, Invitation, Membership, Organization
from accounts.permissions import ADMIN, ASK, DOCUMENTS_WRITE, Principal
from agents.models import Run
from documents.models import Document
from saas.llm.models import LLMCall
from saas.llm.provider_models import OrgProvider

# The audit actions worth a line in the team's activity (the rest stay in the audit log).
ACTIVITY_ACTIONS = ("invitation.accepted", "invitation.created", "api_key.created", "api_key.revoked",
                    "api_key.rotated", "member.removed", "member.left", "llm.provider_created", "crew.create",
                    "billing.subscription_changed")  # fmt: skip
ACTIVITY_LIMIT = 12  # lines in the activity list


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    done: bool
    url: str  # where it is done; empty when this member may not do it
    hint: str


@dataclass(frozen=True)
class TeamFacts:
    """What the checklist ticks and the Overview's header counts, read in one query."""

    uploaded: bool
    asked: bool
    connected: bool
    invited: bool
    keyed: bool
    member_count: int


def team_facts(*, org: Any) -> TeamFacts:
    members = Membership.objects.for_org(org).order_by().values("organization_id").annotate(n=Count("pk"))
    row = (
        Organization.objects.filter(pk=org.pk)
        .values(
            uploaded=Exists(Document.objects.for_org(org)),
            asked=Exists(LLMCall.objects.for_org(org).filter(feature="ask")),
            connected=Exists(OrgProvider.objects.for_org(org)),
            invited=Exists(Invitation.objects.for_org(org)),
            keyed=Exists(ApiKey.objects.for_org(org)),
            member_count=Subquery(members.values("n")),
        )
        .get()
    )
    return TeamFacts(
        uploaded=bool(row["uploaded"]), asked=bool(row["asked"]), connected=bool(row["connected"]),
        invited=bool(row["invited"]), keyed=bool(row["keyed"]), member_count=int(row["member_count"] or 0),
    )  # fmt: skip


def onboarding_steps(*, org: Any, principal: Principal, facts: TeamFacts | None = None) -> list[Step]:
    """The five first steps, each ticked from what exists in the team (not from a stored flag)."""
    slug = org.slug
    facts = facts or team_facts(org=org)

    def link(name: str, scope: str) -> str:
        return reverse(name, kwargs={"org_slug": slug}) if principal.has(scope) else ""

    return [
        Step("upload", "Upload a document", facts.uploaded, link("documents-index", DOCUMENTS_WRITE),
             "PDF, Word, Markdown, HTML or text. Or load the samples."),
        Step("ask", "Ask it a question", facts.asked, link("ask", ASK),
             "Answers cite the passages they come from."),
        Step("model", "Connect a model", facts.connected, link("org-providers", ADMIN),
             "Bring your own OpenAI, Anthropic, Azure or compatible key; the built-in engine works offline."),
        Step("invite", "Invite a teammate", facts.invited or facts.member_count > 1, link("org-members", ADMIN),
             "Members, admins or viewers; an invitation is valid for a week."),
        Step("api_key", "Create an API key", facts.keyed, link("org-api-keys", ADMIN),
             "For scripts and integrations: the API speaks OpenAI's protocol too."),
    ]  # fmt: skip


def onboarding(
    *, org: Any, principal: Principal, membership: Membership, facts: TeamFacts | None = None
) -> dict[str, Any] | None:
    """The checklist to show, or None: dismissed by this member, or every step done."""
    if membership.onboarding_dismissed_at is not None:
        return None
    steps = onboarding_steps(org=org, principal=principal, facts=facts)
    done = sum(step.done for step in steps)
    if done == len(steps):
        return None
    return {"steps": steps, "done": done, "total": len(steps), "percent": round(100 * done / len(steps))}


@dataclass(frozen=True)
class Activity:
    when: datetime
    kind: str  # document, run, team
    text: str
    url: str
    state: str = ""  # ready, failed, running, ...


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def document_sentence(document: Document) -> str:
    name = document.title or document.filename
    if document.status == Document.Status.READY:
        return f"{name} is ready: {_plural(document.chunk_count, 'passage')}"
    if document.status == Document.Status.FAILED:
        reason = document.failure_reason.strip().rstrip(".")
        return f"{name} could not be read" + (f": {reason}" if reason else "")
    if document.status == Document.Status.PROCESSING:
        return f"{name} is being read ({document.progress}%)"
    return f"{name} is waiting to be read"


def run_sentence(run: Run) -> str:
    name = run.crew.name
    prefix = "Scheduled run of " if run.trigger == Run.Trigger.SCHEDULE else ""
    took = _duration((run.finished_at - run.started_at).total_seconds()) if run.finished_at and run.started_at else ""
    if run.status == Run.Status.SUCCEEDED:
        return f"{prefix}{name} finished" + (f" in {took}" if took else "")
    if run.status == Run.Status.FAILED:
        return f"{prefix}{name} failed" + (f" after {took}" if took else "")
    if run.status == Run.Status.CANCELLED:
        return f"{prefix}{name} was cancelled"
    if run.status == Run.Status.RUNNING:
        return f"{prefix}{name} is running"
    return f"{prefix}{name} is queued"


def audit_sentence(event: AuditEvent) -> str:
    target = f": {event.target_label}" if event.target_label else ""
    return f"{action_label(event.action)}{target}, by {event.actor_label or 'the system'}"


def latest_runs(*, org: Any, limit: int) -> list[Run]:
    return list(Run.objects.for_org(org).select_related("crew").order_by("-created_at")[:limit])


def activity_list(*, org: Any, limit: int = ACTIVITY_LIMIT, runs: list[Run] | None = None) -> list[Activity]:
    """The team's latest documents, crew runs and membership/key changes, newest first, in words. `runs`: the
    org's latest runs when the caller has them already (latest_runs, at least `limit` of them)."""
    slug = {"org_slug": org.slug}
    documents = Document.objects.for_org(org).order_by("-updated_at")[:limit]
    runs = (runs if runs is not None else latest_runs(org=org, limit=limit))[:limit]
    events = AuditEvent.objects.for_org(org).filter(action__in=ACTIVITY_ACTIONS).order_by("-created_at")[:limit]
    items = [
        *(Activity(d.processed_at or d.updated_at, "document", document_sentence(d),
                   reverse("document-detail", kwargs={**slug, "document_id": d.pk}), d.status) for d in documents),
        *(Activity(r.finished_at or r.started_at or r.created_at, "run", run_sentence(r),
                   reverse("run-detail", kwargs={**slug, "run_id": r.pk}), r.status) for r in runs),
        *(Activity(e.created_at, "team", audit_sentence(e), "") for e in events),
    ]  # fmt: skip
    return sorted(items, key=lambda item: item.when, reverse=True)[:limit]


def recent_runs(*, org: Any, limit: int = 5, runs: list[Run] | None = None) -> list[dict[str, Any]]:
    """The latest `limit` crew runs with their sentence and duration; `runs` as for activity_list."""
    runs = (runs if runs is not None else latest_runs(org=org, limit=limit))[:limit]
    return [{
        "run": run, "sentence": run_sentence(run),
        "duration": _duration((run.finished_at - run.started_at).total_seconds())
        if run.finished_at and run.started_at else "",
    } for run in runs]  # fmt: skip
