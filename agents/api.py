from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import ASK, CREWS_RUN, READ
from agents import crew_runs, definitions, run_events, selectors, services, starters
from agents.models import Crew, Feedback, Message, Run
from saas.core.api import OrgScopedAPIView, OrgScopedViewSet, StrictSerializer
from saas.core.errors import ApplicationError
from saas.core.streaming import sse, sse_response
from saas.core.validators import validate_single_line
from saas.llm.models import LLMCall


class FeedbackIn(StrictSerializer):
    rating = serializers.ChoiceField(choices=["up", "down"])
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


def _rated(
    request: Request, give: Callable[..., Feedback], answer_key: str, answer_id: Callable[[Feedback], Any]
) -> Response:
    """Validate a rating, save it with `give(rating=..., comment=...)`, and answer 201 with what was saved."""
    data = FeedbackIn(data=request.data)
    data.is_valid(raise_exception=True)
    rating = data.validated_data["rating"]
    feedback = give(
        rating=Feedback.Rating.UP if rating == "up" else Feedback.Rating.DOWN, comment=data.validated_data["comment"]
    )
    body = {
        "id": str(feedback.pk),
        answer_key: str(answer_id(feedback)),
        "rating": rating,
        "comment": feedback.comment,
        "trace_id": selectors.feedback_trace(feedback=feedback),
    }  # the answer's trace (GET /api/v1/traces/{id})
    return Response(body, status=status.HTTP_201_CREATED)


class MessageFeedbackView(OrgScopedAPIView):
    """Thumbs up or down on an assistant message (one per person: a second rating replaces the first)."""

    model = Message
    required_scopes = {"post": ASK}

    @extend_schema(request=FeedbackIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk: str) -> Response:
        principal = request.principal  # type: ignore[attr-defined]
        services.answer_get(org=principal.organization, message_id=pk, user=principal.user)  # 404 before validation
        give = partial(services.feedback_give, org=principal.organization, message_id=pk, user=principal.user,
                       api_key=principal.api_key)  # fmt: skip
        return _rated(request, give, "message", lambda feedback: feedback.message_id)


class ResponseFeedbackView(OrgScopedAPIView):
    """Thumbs up or down on any other answer (an ask response), by the `id` it came with."""

    model = LLMCall
    required_scopes = {"post": ASK}

    @extend_schema(request=FeedbackIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk: str) -> Response:
        principal = request.principal  # type: ignore[attr-defined]
        who = {"user": principal.user, "api_key": principal.api_key}
        services.response_get(org=principal.organization, call_id=pk, **who)  # 404 before validation
        give = partial(services.response_feedback_give, org=principal.organization, call_id=pk, **who)
        return _rated(request, give, "response", lambda feedback: feedback.llm_call_id)


# --- Crews -------------------------------------------------------------------------------------------------


class AgentIn(StrictSerializer):
    role = serializers.CharField(max_length=64, validators=[validate_single_line])
    goal = serializers.CharField(max_length=2000)
    instructions = serializers.CharField(required=False, allow_blank=True, max_length=8000, default="")
    model = serializers.CharField(required=False, allow_blank=True, max_length=64, default="")
    tools = serializers.ListField(child=serializers.CharField(max_length=40), required=False, default=list,
                                  max_length=10)  # fmt: skip
    max_iterations = serializers.IntegerField(min_value=1, max_value=definitions.MAX_ITERATIONS, default=5)


class TaskIn(StrictSerializer):
    name = serializers.SlugField(max_length=64)
    description = serializers.CharField(max_length=8000)
    expected_output = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    agent = serializers.CharField(
        required=False, allow_blank=True, max_length=64, default="", validators=[validate_single_line]
    )
    output_format = serializers.ChoiceField(choices=["text", "json"], default="text")
    output_schema = serializers.JSONField(required=False, allow_null=True, default=None)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # Declared here: a class attribute named `context` would shadow the serializer's own context.
        fields["context"] = serializers.ListField(
            child=serializers.SlugField(max_length=64), required=False, default=list, max_length=definitions.MAX_TASKS
        )
        return fields


class ScheduleIn(StrictSerializer):
    cron = serializers.CharField(required=False, allow_blank=True, max_length=120, default="")
    inputs = serializers.DictField(required=False, default=dict)
    enabled = serializers.BooleanField(required=False, default=False)


class CrewIn(StrictSerializer):
    name = serializers.CharField(max_length=120, validators=[validate_single_line])
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    process = serializers.ChoiceField(choices=Crew.Process.values, default=Crew.Process.SEQUENTIAL)
    default_model = serializers.CharField(required=False, max_length=64, default="auto")
    budget_usd = serializers.DecimalField(max_digits=12, decimal_places=6, min_value=Decimal(0), required=False,
                                          allow_null=True, default=None, coerce_to_string=True)  # fmt: skip
    schedule = ScheduleIn(required=False, default=None, allow_null=True)
    agents = AgentIn(many=True, allow_empty=False, max_length=definitions.MAX_AGENTS)  # type: ignore[call-arg]
    tasks = TaskIn(many=True, allow_empty=False, max_length=definitions.MAX_TASKS)  # type: ignore[call-arg]


def _spec(request: Request) -> dict[str, Any]:
    data = CrewIn(data=request.data)
    data.is_valid(raise_exception=True)
    spec = dict(data.validated_data)
    spec["budget_usd"] = str(spec["budget_usd"]) if spec.get("budget_usd") is not None else None
    spec["schedule"] = dict(spec.get("schedule") or {"cron": "", "inputs": {}, "enabled": False})
    spec["agents"] = [dict(a) for a in spec["agents"]]
    spec["tasks"] = [dict(t) for t in spec["tasks"]]
    return spec


def crew_json(crew: Crew) -> dict[str, Any]:
    spec = services.crew_spec(crew)
    return {
        "id": str(crew.pk), **spec, "template": crew.template, "inputs": definitions.inputs_needed(spec),
        "next_run_at": crew.next_run_at.isoformat() if crew.next_run_at else None,
        "created_at": crew.created_at.isoformat(), "updated_at": crew.updated_at.isoformat(),
    }  # fmt: skip


class CrewViewSet(OrgScopedViewSet):
    """Crews: agents and tasks defined in one document, validated as a whole."""

    model = Crew
    ordering = "-created_at"
    required_scopes = {"list": READ, "retrieve": READ, "create": CREWS_RUN, "update": CREWS_RUN,
                       "destroy": CREWS_RUN}  # fmt: skip

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, operation_id="crews_list")
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([crew_json(crew) for crew in page or []])

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(crew_json(self.get_object()))

    @extend_schema(request=CrewIn, responses={201: OpenApiTypes.OBJECT})
    def create(self, request: Request) -> Response:
        crew = services.crew_create(principal=request.principal, spec=_spec(request))  # type: ignore[attr-defined]
        return Response(crew_json(crew), status=status.HTTP_201_CREATED)

    @extend_schema(request=CrewIn, responses={200: OpenApiTypes.OBJECT}, summary="Replace the crew's definition")
    def update(self, request: Request, pk: str) -> Response:
        crew = self.get_object()  # 404 before validation
        crew = services.crew_update(principal=request.principal, crew_id=crew.pk, spec=_spec(request))  # type: ignore[attr-defined]
        return Response(crew_json(crew))

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        crew = self.get_object()
        services.crew_delete(principal=request.principal, crew_id=crew.pk)  # type: ignore[attr-defined]
        return Response(status=status.HTTP_204_NO_CONTENT)


class StarterIn(StrictSerializer):
    starter = serializers.ChoiceField(choices=list(starters.STARTERS))


class CrewStartersView(OrgScopedAPIView):
    """The ready-made crews (GET), and one created for the org in one request (POST)."""

    required_scopes = {"get": READ, "post": CREWS_RUN}

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response({"results": [{"starter": key, "title": s["title"], "summary": s["summary"]}
                                     for key, s in starters.STARTERS.items()]})  # fmt: skip

    @extend_schema(request=StarterIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = StarterIn(data=request.data)
        data.is_valid(raise_exception=True)
        crew = services.crew_from_starter(principal=request.principal, starter=data.validated_data["starter"])  # type: ignore[attr-defined]
        return Response(crew_json(crew), status=status.HTTP_201_CREATED)


# --- Runs --------------------------------------------------------------------------------------------------


class RunIn(StrictSerializer):
    inputs = serializers.DictField(required=False, default=dict)


class CrewRunsView(OrgScopedAPIView):
    """A crew's runs (GET), or a new run (POST: 202 with the run's Location; an `Idempotency-Key` header
    makes a retried request return the first run instead of starting another)."""

    model = Crew
    required_scopes = {"get": READ, "post": CREWS_RUN}

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, pk: str) -> Response:
        crew = services.crew_get(org=request.org, crew_id=pk)  # type: ignore[attr-defined]
        runs = Run.objects.for_org(request.org).filter(crew=crew).order_by("-created_at")[:100]  # type: ignore[attr-defined]
        return Response({"results": [selectors.run_json(run) for run in runs]})

    @extend_schema(
        request=RunIn, responses={202: OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
    )  # fmt: skip
    def post(self, request: Request, pk: str) -> Response:
        principal = request.principal  # type: ignore[attr-defined]
        crew = services.crew_get(org=principal.organization, crew_id=pk)
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 255:
            raise ApplicationError("The Idempotency-Key header is at most 255 characters.", code="invalid")
        data = RunIn(data=request.data)
        data.is_valid(raise_exception=True)
        run, created = crew_runs.run_start(crew=crew, inputs=data.validated_data["inputs"], user=principal.user,
                                          api_key=principal.api_key, idempotency_key=key)  # fmt: skip
        response = Response(selectors.run_json(run), status=status.HTTP_202_ACCEPTED)
        response["Location"] = f"/api/v1/runs/{run.pk}"
        if not created:
            response["Idempotent-Replayed"] = "true"
        return response


class RunViewSet(OrgScopedViewSet):
    """Runs: status, output, steps, tokens and cost; their live events; cancellation."""

    model = Run
    ordering = "-created_at"
    required_scopes = {"list": READ, "retrieve": READ, "cancel": CREWS_RUN, "retry": CREWS_RUN, "events": READ}

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, operation_id="runs_list")
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([selectors.run_json(run) for run in page or []])

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(selectors.run_json(self.get_object(), with_steps=True))

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        run = crew_runs.run_cancel(org=request.org, run_id=self.get_object().pk)  # type: ignore[attr-defined]
        return Response(selectors.run_json(run), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None, responses={202: OpenApiTypes.OBJECT}, summary="Run it again with the same inputs",
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        principal = request.principal  # type: ignore[attr-defined]
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 255:
            raise ApplicationError("The Idempotency-Key header is at most 255 characters.", code="invalid")
        run = crew_runs.run_retry(org=principal.organization, run_id=self.get_object().pk, user=principal.user,
                                 api_key=principal.api_key, idempotency_key=key)  # fmt: skip
        response = Response(selectors.run_json(run), status=status.HTTP_202_ACCEPTED)
        response["Location"] = f"/api/v1/runs/{run.pk}"
        return response

    @extend_schema(responses={(200, "text/event-stream"): OpenApiTypes.STR}, summary="The run's events (SSE)")
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str) -> Any:
        return sse_response(run_event_stream(self.get_object()))


def run_event_stream(run: Run, *, keepalive_seconds: float = 15.0) -> Iterator[bytes]:
    """The recorded steps, then the live events, until the run ends (see agents/run_events.py)."""
    subscription = run_events.Subscription(run.pk)  # before the replay: nothing falls in between
    try:
        run.refresh_from_db()
        yield sse({"type": "run", "run": selectors.run_json(run)})
        last_seq = 0
        for step in selectors.run_steps(run):
            last_seq = step["seq"]
            yield sse({"type": "step", "step": step})
        if run.status in Run.FINISHED:
            yield sse({"type": "status", "status": run.status, "error": selectors.run_json(run)["error"]})
            return
        quiet = 0.0
        for event in subscription.events(idle_timeout=1.0):
            if event is None:
                quiet += 1.0
                run.refresh_from_db(fields=["status", "error_code", "error_encrypted"])
                if run.status in Run.FINISHED:  # its last event was missed (Redis blinked): say it anyway
                    yield sse({"type": "status", "status": run.status, "error": selectors.run_json(run)["error"]})
                    return
                if quiet >= keepalive_seconds:
                    quiet = 0.0
                    yield b": keep-alive\n\n"
                continue
            quiet = 0.0
            if event["type"] == "step" and event["step"]["seq"] <= last_seq:
                continue
            yield sse(event)
            if event["type"] == "status" and event["status"] in Run.FINISHED:
                return
    finally:
        subscription.close()
