from django.contrib import admin

from agents.models import Agent, Conversation, Crew, Feedback, Message, Run, RunStep, Task
from saas.core.admin import LedgerAdmin, OrgOwnedAdmin, plain_fields, rows_table


@admin.register(Crew)
class CrewAdmin(OrgOwnedAdmin):
    """Crews across teams, read-only: their members edit them in the builder (which validates the whole crew)."""

    list_display = ("name", "organization", "process", "default_model", "schedule_cron", "schedule_enabled",
                    "next_run_at", "created_at")  # fmt: skip
    list_filter = ("process", "schedule_enabled")
    search_fields = ("name", "organization__name", "organization__slug")
    list_select_related = ("organization",)
    fields = (*plain_fields(Crew), "agents_and_tasks")
    readonly_fields = ("agents_and_tasks",)

    @admin.display(description="Agents and tasks")
    def agents_and_tasks(self, crew: Crew) -> str:
        agents = [("agent", a.position, a.role, a.model or "(crew default)") for a in
                  Agent.all_orgs.filter(crew=crew).order_by("position")]  # fmt: skip
        tasks = [("task", t.position, t.name, t.output_format) for t in
                 Task.all_orgs.filter(crew=crew).order_by("position")]  # fmt: skip
        return rows_table(("", "#", "Role / name", "Model / output"), agents + tasks)

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Run)
class RunAdmin(LedgerAdmin):
    """Runs and their steps, read-only (inputs, outputs and errors stay encrypted): cost and timing at a glance."""

    list_display = ("created_at", "crew", "organization", "status", "trigger", "error_code", "prompt_tokens",
                    "completion_tokens", "cost_usd", "finished_at")  # fmt: skip
    list_filter = ("status", "trigger", "error_code")
    search_fields = ("crew__name", "organization__name", "organization__slug", "idempotency_key")
    date_hierarchy = "created_at"
    list_select_related = ("crew", "organization")
    fields = (*plain_fields(Run, "definition"), "steps")

    @admin.display(description="Steps")
    def steps(self, run: Run) -> str:
        rows = RunStep.all_orgs.filter(run=run).order_by("seq")
        return rows_table(("#", "Attempt", "Kind", "Agent", "Task", "Tokens in", "Tokens out", "Cost", "ms"),
                          [(s.seq, s.attempt, s.get_kind_display(), s.agent_role, s.task_name, s.prompt_tokens,
                            s.completion_tokens, s.cost_usd, s.latency_ms) for s in rows])  # fmt: skip


@admin.register(Conversation)
class ConversationAdmin(LedgerAdmin):
    """Who talked to which model and when; titles and messages are the members' own and stay encrypted."""

    list_display = ("created_at", "organization", "user", "model", "updated_at")
    search_fields = ("organization__name", "organization__slug", "user__email")
    date_hierarchy = "created_at"
    list_select_related = ("organization", "user")
    fields = plain_fields(Conversation, "collections")  # a scoped many-to-many cannot be listed without an org

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return True  # an operator may remove one (e.g. on a support request); its messages go with it


@admin.register(Message)
class MessageAdmin(LedgerAdmin):
    list_display = ("created_at", "organization", "conversation", "role", "status", "model", "engine")
    list_filter = ("role", "status")
    search_fields = ("organization__name", "model", "engine")
    list_select_related = ("organization", "conversation")
    fields = plain_fields(Message)


@admin.register(Feedback)
class FeedbackAdmin(LedgerAdmin):
    list_display = ("created_at", "organization", "rating", "user", "api_key")
    list_filter = ("rating",)
    search_fields = ("organization__name",)
    fields = plain_fields(Feedback)
