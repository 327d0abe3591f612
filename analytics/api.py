"""Evals in the API: /api/v1/datasets (with their cases and the import), /api/v1/eval-cases, /api/v1/eval-runs
(start one, read its results, compare two). Admins only (the `admin` scope for keys): datasets hold the team's
questions as members asked them, and the thumbs-down comments on the answers."""

from typing import Any

from django.db.models import Count
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api import OrgRequest
from accounts.authentication import ApiKeyAuthentication, CsrfSessionAuthentication
from accounts.permissions import ADMIN
from analytics import eval_runs, evals
from analytics.models import EvalCase, EvalDataset, EvalResult, EvalRun
from saas.core.api import OrgScopedViewSet, StrictSerializer
from saas.core.errors import ApplicationError
from saas.core.validators import validate_single_line


class EvalDatasetOut(serializers.ModelSerializer):
    case_count = serializers.SerializerMethodField()

    class Meta:
        model = EvalDataset
        fields = ["id", "name", "description", "prompt_key", "max_drop", "judge_model", "case_count", "created_at"]

    def get_case_count(self, dataset: EvalDataset) -> int:
        counted = getattr(dataset, "case_total", None)  # annotated on lists (DatasetViewSet)
        return counted if counted is not None else EvalCase.objects.for_org(dataset.organization_id).filter(
            dataset=dataset).count()  # fmt: skip


class EvalDatasetIn(StrictSerializer):
    name = serializers.CharField(max_length=100, validators=[validate_single_line])
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    max_drop = serializers.FloatField(min_value=0, max_value=1, required=False)
    judge_model = serializers.CharField(max_length=64, required=False, allow_blank=True)


class EvalDatasetPatch(EvalDatasetIn):
    name = serializers.CharField(max_length=100, required=False, validators=[validate_single_line])


class EvalCaseOut(serializers.Serializer):
    id = serializers.UUIDField()
    dataset = serializers.UUIDField(source="dataset_id")
    input = serializers.CharField()
    collection = serializers.UUIDField(source="collection_id", allow_null=True)
    expected_answer = serializers.CharField()
    match = serializers.CharField()
    expected_document = serializers.UUIDField(source="expected_document_id", allow_null=True)
    json_schema = serializers.JSONField(allow_null=True)
    rubric = serializers.CharField()
    note = serializers.CharField()
    # A stub gap: DRF's serializer metaclass takes declared fields off the class, so this does not shadow Field.source.
    source = serializers.CharField()  # type: ignore[assignment]
    feedback = serializers.UUIDField(source="feedback_id", allow_null=True)
    request = serializers.UUIDField(source="llm_call_id", allow_null=True)
    created_at = serializers.DateTimeField()


class EvalCaseIn(StrictSerializer):
    """A case written out, or made from a thumbs-down (`feedback`) or a request-log row (`request`)."""

    dataset = serializers.UUIDField(required=False, help_text="Without one, a one-click case lands in its inbox.")
    feedback = serializers.UUIDField(required=False)
    request = serializers.UUIDField(required=False)
    input = serializers.CharField(required=False, max_length=evals.MAX_INPUT)
    collection = serializers.CharField(required=False, allow_blank=True, max_length=100)
    expected_answer = serializers.CharField(required=False, allow_blank=True, max_length=evals.MAX_EXPECTED)
    match = serializers.ChoiceField(choices=EvalCase.Match.values, required=False)
    expected_document = serializers.CharField(required=False, allow_blank=True, max_length=300)
    json_schema = serializers.JSONField(required=False, allow_null=True)
    rubric = serializers.CharField(required=False, allow_blank=True, max_length=evals.MAX_RUBRIC)
    note = serializers.CharField(required=False, allow_blank=True, max_length=evals.MAX_NOTE)


class EvalCasePatch(StrictSerializer):
    input = serializers.CharField(required=False, max_length=evals.MAX_INPUT)
    collection = serializers.CharField(required=False, allow_blank=True, max_length=100)
    expected_answer = serializers.CharField(required=False, allow_blank=True, max_length=evals.MAX_EXPECTED)
    match = serializers.ChoiceField(choices=EvalCase.Match.values, required=False)
    expected_document = serializers.CharField(required=False, allow_blank=True, max_length=300)
    json_schema = serializers.JSONField(required=False, allow_null=True)
    rubric = serializers.CharField(required=False, allow_blank=True, max_length=evals.MAX_RUBRIC)
    note = serializers.CharField(required=False, allow_blank=True, max_length=evals.MAX_NOTE)


class EvalRunOut(serializers.ModelSerializer):
    dataset = serializers.UUIDField(source="dataset_id")
    version = serializers.UUIDField(source="version_id", allow_null=True)

    class Meta:
        model = EvalRun
        fields = [
            "id", "dataset", "prompt_key", "version", "prompt_version", "model", "purpose", "status", "error",
            "scores", "case_count", "passed_count", "created_at", "started_at", "finished_at",
        ]  # fmt: skip


class EvalResultOut(serializers.Serializer):
    case = serializers.UUIDField(source="case_id")
    input = serializers.CharField(source="case.input")
    answer = serializers.CharField()
    citations = serializers.JSONField()
    scores = serializers.JSONField()
    reasons = serializers.JSONField()
    passed = serializers.BooleanField()
    error = serializers.CharField()
    request = serializers.CharField(source="call_id")
    latency_ms = serializers.IntegerField()


class EvalRunIn(StrictSerializer):
    dataset = serializers.UUIDField()
    version = serializers.UUIDField(required=False, help_text="A prompt version's id; without it and without "
                                                              "`text`, what production uses now.")  # fmt: skip
    text = serializers.CharField(required=False, max_length=eval_runs.MAX_PROMPT, help_text="A prompt text to try "
                                 "without saving it as a version.")  # fmt: skip
    model = serializers.CharField(required=False, max_length=64, default="default")


class _AdminViewSet(OrgScopedViewSet):
    authentication_classes = [ApiKeyAuthentication, CsrfSessionAuthentication]


class EvalCaseListOut(serializers.Serializer):
    """All of a dataset's cases in one answer (a dataset holds at most analytics.evals.MAX_CASES)."""

    results = EvalCaseOut(many=True)


class DatasetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _AdminViewSet):
    model = EvalDataset
    serializer_class = EvalDatasetOut
    ordering = "name"
    parser_classes = [JSONParser, MultiPartParser]
    required_scopes = {
        "list": ADMIN, "retrieve": ADMIN, "create": ADMIN, "partial_update": ADMIN, "destroy": ADMIN,
        "cases": ADMIN, "import_cases": ADMIN,
    }  # fmt: skip

    def safely_get_queryset(self, queryset: Any) -> Any:
        return queryset.annotate(case_total=Count("cases"))

    @extend_schema(request=EvalDatasetIn, responses={201: EvalDatasetOut})
    def create(self, request: OrgRequest) -> Response:
        data = EvalDatasetIn(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = evals.dataset_create(org=request.org, user=request.principal.user, **data.validated_data)
        return Response(EvalDatasetOut(dataset).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=EvalDatasetPatch, responses=EvalDatasetOut)
    def partial_update(self, request: OrgRequest, pk: str) -> Response:
        data = EvalDatasetPatch(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = evals.dataset_update(org=request.org, dataset_id=self.get_object().pk, **data.validated_data)
        return Response(EvalDatasetOut(dataset).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: OrgRequest, pk: str) -> Response:
        evals.dataset_delete(org=request.org, dataset_id=self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=EvalCaseListOut, summary="The dataset's cases (at most 500), in the order they were added")
    @action(detail=True, methods=["get"])
    def cases(self, request: OrgRequest, pk: str) -> Response:
        dataset = self.get_object()
        cases = EvalCase.objects.for_org(request.org).filter(dataset=dataset)
        return Response({"results": EvalCaseOut(cases, many=True).data})

    @extend_schema(
        request={"multipart/form-data": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
        responses={201: OpenApiTypes.OBJECT},
        summary="Import cases from CSV (with a header row) or JSONL: all of them, or none and every wrong line",
    )  # fmt: skip
    @action(detail=True, methods=["post"], url_path="import")
    def import_cases(self, request: OrgRequest, pk: str) -> Response:
        dataset = self.get_object()
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > evals.IMPORT_MAX_BYTES + 64 * 1024:
            raise evals.ImportRefused("The file is larger than 2 MB.", code="too_large", status=413)
        upload = request.FILES.get("file")
        if upload is None:
            raise ApplicationError("Send the file in the `file` field (multipart).", code="invalid")
        cases = evals.cases_import(
            org=request.org,
            user=request.principal.user,
            dataset_id=dataset.pk,
            data=upload.read(evals.IMPORT_MAX_BYTES + 1),
            filename=upload.name or "",
        )
        return Response({"imported": len(cases), "cases": [str(c.pk) for c in cases]}, status=status.HTTP_201_CREATED)


class CaseViewSet(mixins.RetrieveModelMixin, _AdminViewSet):
    model = EvalCase
    serializer_class = EvalCaseOut
    ordering = "created_at"
    required_scopes = {"retrieve": ADMIN, "create": ADMIN, "partial_update": ADMIN, "destroy": ADMIN}

    @extend_schema(
        request=EvalCaseIn,
        responses={201: EvalCaseOut, 200: EvalCaseOut},
        summary="Add a case: written out, or from a thumbs-down or a request (200 when it exists)",
    )
    def create(self, request: OrgRequest) -> Response:
        serializer = EvalCaseIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        org, principal = request.org, request.principal
        dataset = data.pop("dataset", None)
        feedback, call = data.pop("feedback", None), data.pop("request", None)
        if feedback and call:
            raise ApplicationError("Give a feedback or a request, not both.", code="invalid")
        if feedback or call:
            if data:
                raise ApplicationError("A case made from a feedback or a request takes only `dataset` with it; "
                                       "change its fields afterwards.", code="invalid")  # fmt: skip
            made = (evals.case_from_feedback(principal=principal, feedback_id=feedback, dataset_id=dataset) if feedback
                    else evals.case_from_call(principal=principal, call_id=call, dataset_id=dataset))  # fmt: skip
            case, created = made
            return Response(EvalCaseOut(case).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
        if dataset is None:
            raise ApplicationError("Name the dataset the case goes into.", code="invalid")
        case = evals.case_create(org=org, user=principal.user, dataset_id=dataset, data=data)
        return Response(EvalCaseOut(case).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=EvalCasePatch, responses=EvalCaseOut)
    def partial_update(self, request: OrgRequest, pk: str) -> Response:
        data = EvalCasePatch(data=request.data)
        data.is_valid(raise_exception=True)
        case = evals.case_update(org=request.org, case_id=self.get_object().pk, data=dict(data.validated_data))
        return Response(EvalCaseOut(case).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: OrgRequest, pk: str) -> Response:
        evals.case_delete(org=request.org, case_id=self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EvalRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _AdminViewSet):
    model = EvalRun
    serializer_class = EvalRunOut
    ordering = "-created_at"
    required_scopes = {"list": ADMIN, "retrieve": ADMIN, "create": ADMIN, "results": ADMIN, "diff": ADMIN}

    def safely_get_queryset(self, queryset: Any) -> Any:
        dataset = self.request.query_params.get("dataset")
        if dataset is not None:  # given, even empty: it must be an id
            try:
                return queryset.filter(dataset_id=serializers.UUIDField().to_internal_value(dataset))
            except serializers.ValidationError as exc:
                raise ApplicationError("`dataset` is a dataset's id.", code="invalid") from exc
        return queryset

    @extend_schema(parameters=[OpenApiParameter("dataset", OpenApiTypes.UUID, description="Only this dataset's runs")])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=EvalRunIn, responses={202: EvalRunOut}, summary="Run a prompt version on a dataset")
    def create(self, request: OrgRequest) -> Response:
        data = EvalRunIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        run = eval_runs.eval_run_start(
            org=request.org, user=request.principal.user, dataset_id=values["dataset"],
            version_id=values.get("version"), text=values.get("text"), model=values["model"],
        )  # fmt: skip
        return Response(EvalRunOut(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=EvalResultOut(many=True), summary="Each case's answer and scores")
    @action(detail=True, methods=["get"])
    def results(self, request: OrgRequest, pk: str) -> Response:
        run = self.get_object()
        results: list[EvalResult] = eval_runs.eval_run_results(org=request.org, run=run)
        return Response({"run": EvalRunOut(run).data, "results": EvalResultOut(results, many=True).data})

    @extend_schema(
        parameters=[OpenApiParameter("against", OpenApiTypes.UUID, required=True, description="The other run")],
        responses=OpenApiTypes.OBJECT, summary="This run against another of the same dataset, case by case",
    )  # fmt: skip
    @action(detail=True, methods=["get"])
    def diff(self, request: OrgRequest, pk: str) -> Response:
        run = self.get_object()
        other_id = request.query_params.get("against", "")
        other = eval_runs.eval_run_get(org=request.org, run_id=_uuid(other_id))
        diff = eval_runs.eval_run_diff(org=request.org, base=other, other=run)
        return Response({
            "base": str(other.pk), "run": str(run.pk),
            "scores": {n: {"base": b, "run": a} for n, (b, a) in diff.scores.items()},
            "cases": [{"case": str(c.case.pk), "verdict": c.verdict,
                       "changes": {n: {"base": b, "run": a} for n, (b, a) in c.changes.items()}} for c in diff.cases],
        })  # fmt: skip


def _uuid(value: str) -> str:
    try:
        return str(serializers.UUIDField().to_internal_value(value))
    except serializers.ValidationError as exc:
        raise ApplicationError("`against` is an eval run's id.", code="invalid") from exc
