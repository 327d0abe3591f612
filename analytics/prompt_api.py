"""`/api/v1/prompts` and `/api/v1/experiments`: the org's system prompts, their versions and labels, and its A/B
tests with per-variant figures. Reading needs `read`; creating versions, labels and experiments needs `admin`.
Another org's version or experiment is a 404; the operator's default versions are visible to every org."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import request_origin
from accounts.permissions import ADMIN, READ
from analytics import experiments
from analytics.prompt_diff import version_diff
from saas.core.api import OrgScopedAPIView, StrictSerializer
from saas.llm import prompt_experiments, prompts
from saas.llm.models import Experiment, Prompt, PromptVersion


def version_json(version: PromptVersion, *, labels: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": str(version.pk), "key": version.prompt.key, "number": version.number,
        "owner": "default" if version.organization_id is None else "org", "text": version.text,
        "model": version.model, "parameters": version.parameters, "note": version.note,
        "author": version.author.email if version.author_id and version.author else None,
        "created_at": version.created_at.isoformat(), "labels": labels or [],
    }  # fmt: skip


def _labels(default: Prompt | None, override: Prompt | None) -> dict[Any, list[str]]:
    """Which of the org's labels point at each version (the org's own labels; the default's where the org set
    none)."""
    found: dict[Any, list[str]] = {}
    for label in prompts.LABELS:
        chosen = getattr(override, f"{label}_id", None) if override else None
        chosen = chosen or (getattr(default, f"{label}_id", None) if default else None)
        if chosen:
            found.setdefault(chosen, []).append(str(label))
    return found


def prompt_json(*, org: Any, key: str) -> dict[str, Any]:
    default, override = prompts.prompt_get(org=org, key=key)
    labels = _labels(default, override)
    resolved = prompts.prompt_resolve(org=org, key=key)
    head = default or override
    return {
        "key": key, "title": head.title if head else "", "description": head.description if head else "",
        "overridden": bool(override and override.production_id),
        "production": {"id": str(resolved.version_id) if resolved.version_id else None, "number": resolved.number,
                       "owner": resolved.source},
        "versions": [version_json(v, labels=labels.get(v.pk)) for v in prompts.prompt_versions(org=org, key=key)],
    }  # fmt: skip


class VersionIn(StrictSerializer):
    text = serializers.CharField(max_length=prompts.MAX_TEXT_CHARS, allow_blank=True, trim_whitespace=False)
    model = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    parameters = serializers.DictField(required=False, default=dict)
    note = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    label = serializers.ChoiceField(  # type: ignore[assignment]  # a field named like Field.label
        choices=[*prompts.LABELS], required=False, allow_null=True, default=None
    )


class LabelIn(StrictSerializer):
    label = serializers.ChoiceField(choices=[*prompts.LABELS])  # type: ignore[assignment]


class ExperimentIn(StrictSerializer):
    key = serializers.CharField(max_length=100)
    name = serializers.CharField(max_length=120)
    versions = serializers.ListField(
        child=serializers.UUIDField(), min_length=2, max_length=prompt_experiments.MAX_VARIANTS
    )
    weights = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=1000), required=False,
                                    max_length=prompt_experiments.MAX_VARIANTS)  # fmt: skip
    min_samples = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, default=100)


class EndIn(StrictSerializer):
    winner = serializers.UUIDField(required=False, allow_null=True, default=None)


def _valid(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class PromptListView(OrgScopedAPIView):
    required_scopes = {"get": READ}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="The system prompts the org uses, with their version in "
                   "production", operation_id="api_v1_prompts_list")  # fmt: skip
    def get(self, request: Request) -> Response:
        org = request.org  # type: ignore[attr-defined]
        rows = []
        for row in prompts.prompt_list(org=org):
            resolved = prompts.prompt_resolve(org=org, key=row["key"])
            rows.append({"key": row["key"], "title": row["title"],
                         "overridden": bool(row["override"] and row["override"].production_id),
                         "production": {"id": str(resolved.version_id) if resolved.version_id else None,
                                        "number": resolved.number, "owner": resolved.source}})  # fmt: skip
        return Response({"results": rows})


class PromptDetailView(OrgScopedAPIView):
    model = Prompt
    required_scopes = {"get": READ}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="A prompt key: its versions (the org's and the default's) "
                   "and labels")  # fmt: skip
    def get(self, request: Request, key: str) -> Response:
        return Response(prompt_json(org=request.org, key=key))  # type: ignore[attr-defined]


class PromptVersionsView(OrgScopedAPIView):
    model = Prompt
    required_scopes = {"get": READ, "post": ADMIN}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="A prompt's versions, newest first",
                   operation_id="api_v1_prompt_versions_list")  # fmt: skip
    def get(self, request: Request, key: str) -> Response:
        data = prompt_json(org=request.org, key=key)  # type: ignore[attr-defined]
        return Response({"results": data["versions"]})

    @extend_schema(request=VersionIn, responses={201: OpenApiTypes.OBJECT},
                   summary="Add a version (the org's override of the key); `label` labels it at once")  # fmt: skip
    def post(self, request: Request, key: str) -> Response:
        org, principal = request.org, request.principal  # type: ignore[attr-defined]
        prompts.prompt_get(org=org, key=key)  # an unknown key is a 404
        data = _valid(VersionIn, request)
        label = data.pop("label")
        version = prompts.prompt_version_create(org=org, key=key, principal=principal, origin=request_origin(request),
                                                **data)  # fmt: skip
        if label:
            prompts.prompt_label_set(org=org, version=version, label=label, principal=principal,
                                     origin=request_origin(request))  # fmt: skip
        return Response(version_json(version, labels=[label] if label else []), status=201)


class PromptVersionDetailView(OrgScopedAPIView):
    model = PromptVersion
    required_scopes = {"get": READ}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="One version, with its diff against the previous one")
    def get(self, request: Request, version_id: str) -> Response:
        org = request.org  # type: ignore[attr-defined]
        version = prompts.prompt_version_get(org=org, version_id=version_id)
        diff = version_diff(org=org, version=version)
        return Response({**version_json(version), "previous": str(diff.previous.pk) if diff.previous else None,
                         "diff": diff.unified})  # fmt: skip


class PromptVersionLabelView(OrgScopedAPIView):
    model = PromptVersion
    required_scopes = {"post": ADMIN}

    @extend_schema(request=LabelIn, responses=OpenApiTypes.OBJECT, summary="Label a version production or staging "
                   "(production passes the regression gate first: 409 promotion_refused when it drops)")  # fmt: skip
    def post(self, request: Request, version_id: str) -> Response:
        org = request.org  # type: ignore[attr-defined]
        version = prompts.prompt_version_get(org=org, version_id=version_id)
        label = _valid(LabelIn, request)["label"]
        prompts.prompt_label_set(org=org, version=version, label=label, principal=request.principal,  # type: ignore[attr-defined]
                                 origin=request_origin(request))  # fmt: skip
        return Response(prompt_json(org=org, key=version.prompt.key))


class ExperimentListView(OrgScopedAPIView):
    required_scopes = {"get": READ, "post": ADMIN}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="The org's experiments, running first",
                   operation_id="api_v1_experiments_list")  # fmt: skip
    def get(self, request: Request) -> Response:
        rows = experiments.experiment_list(org=request.org)  # type: ignore[attr-defined]
        return Response({"results": [{
            "id": str(e.pk), "key": e.key, "name": e.name, "status": e.status, "created_at": e.created_at.isoformat(),
            "ended_at": e.ended_at.isoformat() if e.ended_at else None,
            "variants": [{"id": str(v.pk), "name": v.name, "weight": v.weight, "version": v.version.number}
                         for v in e.variants.all()],
        } for e in rows]})  # fmt: skip

    @extend_schema(request=ExperimentIn, responses={201: OpenApiTypes.OBJECT},
                   summary="Start an A/B test between 2 to 4 versions of a key")  # fmt: skip
    def post(self, request: Request) -> Response:
        org = request.org  # type: ignore[attr-defined]
        data = _valid(ExperimentIn, request)
        versions = [prompts.prompt_version_get(org=org, version_id=v) for v in data["versions"]]
        experiment = prompt_experiments.experiment_start(
            org=org, key=data["key"], name=data["name"], versions=versions, weights=data.get("weights"),
            min_samples=data["min_samples"], principal=request.principal, origin=request_origin(request),  # type: ignore[attr-defined]
        )  # fmt: skip
        return Response(experiments.experiment_report(experiment=experiment).as_json(), status=201)


class ExperimentDetailView(OrgScopedAPIView):
    model = Experiment
    required_scopes = {"get": READ}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="An experiment with each variant's figures and its "
                   "comparison with the control")  # fmt: skip
    def get(self, request: Request, experiment_id: str) -> Response:
        experiment = experiments.experiment_get(org=request.org, experiment_id=experiment_id)  # type: ignore[attr-defined]
        return Response(experiments.experiment_report(experiment=experiment).as_json())


class ExperimentEndView(OrgScopedAPIView):
    model = Experiment
    required_scopes = {"post": ADMIN}

    @extend_schema(request=EndIn, responses=OpenApiTypes.OBJECT, summary="End an experiment; a `winner` variant is "
                   "promoted to production through the regression gate")  # fmt: skip
    def post(self, request: Request, experiment_id: str) -> Response:
        org = request.org  # type: ignore[attr-defined]
        experiment = experiments.experiment_get(org=org, experiment_id=experiment_id)
        winner_id = _valid(EndIn, request)["winner"]
        winner = None
        if winner_id is not None:
            winner = experiment.variants.filter(pk=winner_id).select_related("version__prompt").first()
            if winner is None:
                raise prompts.NotFound("No such variant in this experiment.")
        ended = prompt_experiments.experiment_end(experiment=experiment, winner=winner, principal=request.principal,  # type: ignore[attr-defined]
                                       origin=request_origin(request))  # fmt: skip
        return Response(experiments.experiment_report(experiment=ended).as_json())
