"""The gateway's HTTP surfaces.

- `/v1/chat/completions`, `/v1/models`: OpenAI-compatible (the official `openai` SDK works unchanged with
  `base_url=<crewdesk>/v1` and an org API key), errors in OpenAI's shape.
- `/api/v1/generate`: the same gateway in Crewdesk's own API (JSON, or SSE with "stream": true).
"""

import itertools
import time
from collections.abc import Generator, Iterator
from typing import Any

from django.conf import settings
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.authentication import ApiKeyAuthentication, CsrfSessionAuthentication, request_origin
from accounts.permissions import ADMIN, ASK, READ
from billing import quota
from saas.core import memo
from saas.core.api import OrgScopedAPIView, StrictSerializer
from saas.core.errors import ApplicationError, NotFound, application_error_response
from saas.core.responses import after_send
from saas.core.streaming import sse, sse_response
from saas.core.text import storable
from saas.llm import config, gateway, openai_compat, provider_registry, services, structured, tracing
from saas.llm.models import ModelConfig, OrgLLMSettings
from saas.llm.providers import ChatRequest, LLMError

BYPASS_HEADER = "X-Crewdesk-Cache"


def _bypass_cache(request: Request) -> bool:
    return request.headers.get(BYPASS_HEADER, "").lower() == "bypass" or "no-cache" in request.headers.get(
        "Cache-Control", ""
    )


def _recorded_after_send(
    result: gateway.GatewayResult, response: Response, trace: tracing.Recorder | None = None
) -> Response:
    """The answer leaves first; its ledger row, cache entries and trace are written right after
    (saas.core.responses)."""
    if result.record is not None:
        after_send(response, result.record, what=f"LLM call {result.call_id}")
    if trace is not None and not trace.finished:
        after_send(response, trace.finish, what=f"trace {trace.id}")
    return response


# --- OpenAI-compatible -------------------------------------------------------------------------------------

OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}  # fmt: skip


def openai_error(message: str, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": OPENAI_TYPES.get(status, "api_error"), "param": param, "code": code}}


def openai_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Errors of the OpenAI-compatible endpoints, in the shape OpenAI's clients expect."""
    if isinstance(exc, ApplicationError):  # LLMError is one
        response = application_error_response(exc, response_class=Response)
        response.data = openai_error(exc.message, exc.status, exc.code, (exc.details or {}).get("param"))
        return response  # type: ignore[no-any-return]
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = getattr(exc, "detail", str(exc))
    if isinstance(detail, dict):
        param, messages = next(iter(detail.items()))
        message = f"{param}: {messages[0] if isinstance(messages, list) else messages}"
    else:
        param, message = None, str(detail[0] if isinstance(detail, list) else detail)
    response.data = openai_error(message, response.status_code, getattr(exc, "default_code", None), param)
    return response


class MessageIn(serializers.Serializer):
    role = serializers.CharField(max_length=32)
    content = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=2_000_000)
    name = serializers.CharField(required=False, max_length=64)


def _usage(usage: Any) -> dict[str, int]:
    return openai_compat.usage_body(usage)


class OpenAICompatibleView(OrgScopedAPIView):
    authentication_classes = [ApiKeyAuthentication]
    check_body_text = False  # the gateway refuses NUL and unpaired surrogates, with a ledger row

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # The key, plan and model registry memos check their versions in Redis once per request: in the rate-limit
        # script, which confirms the copies the authentication used before it counts (saas.core.memo).
        with memo.versions_read_once(optimistic=True):
            return super().dispatch(request, *args, **kwargs)

    def get_exception_handler(self) -> Any:
        return openai_exception_handler


class ChatCompletionsView(OpenAICompatibleView):
    required_scopes = {"post": ASK}
    rate_limit_endpoints = {"post": "chat_completions"}

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # Most requests here become a model call: the quota place is taken in the rate-limit round trip, and
        # given back when the request ends without using it (a cached answer, a refusal, an invalid body).
        with quota.places_taken_ahead():
            return super().dispatch(request, *args, **kwargs)

    def rate_limit_companion(self, request: Any, principal: Any) -> Any:
        return quota.companion_for(org=principal.organization) if request.method == "POST" else None

    @extend_schema(
        request=openai_compat.ChatCompletionIn, responses=OpenApiTypes.OBJECT, summary="OpenAI-compatible chat"
    )
    def post(self, request: Request) -> Any:
        data = openai_compat.validated_completion(request.data)
        structured.check_response_format(data["response_format"])
        principal = request.principal  # type: ignore[attr-defined]
        chat = openai_compat.chat_request(data, org_id=principal.organization.pk)
        caller = gateway.Caller.of(principal, "chat")
        created = int(time.time())
        bypass = _bypass_cache(request) or bool(data["logprobs"])  # a cached answer has no logprobs
        trace = tracing.for_caller(caller, "completion", "Chat completion", ends_with_call=True)  # with the row
        if not data["stream"]:
            with tracing.trace(defer=True, **trace) as recorder:
                result = gateway.chat(caller=caller, model=data["model"], request=chat, bypass_cache=bypass,
                                      defer_records=True)  # fmt: skip
            body = openai_compat.completion_body(result, created=created, data=data)
            return _recorded_after_send(result, Response(body), recorder)
        stream = tracing.traced_call(tracing.start(**trace), lambda: gateway.chat_stream(
            caller=caller, model=data["model"], request=chat, bypass_cache=bypass, defer_records=True))  # fmt: skip
        first = next(stream)  # upstream failures before the first token still get a proper HTTP status
        include_usage = (data.get("stream_options") or {}).get("include_usage", False)
        with_tools = bool(chat.tools) and chat.tool_choice != "none"
        return sse_response(
            openai_compat.openai_chunks(
                first, stream, created=created, include_usage=include_usage, with_tools=with_tools,
                on_error=lambda error: openai_error(error.message, error.http_status, error.kind),
            )
        )  # fmt: skip


def _model_entries(org: Any) -> list[dict[str, Any]]:
    """/v1/models' entries: what this org may use (its own providers' models too), and `auto`."""
    reachable = (m for kind in ModelConfig.Kind.values for m in provider_registry.reachable_models(org, kind=kind))
    data = [openai_compat.model_entry(m) for m in sorted(reachable, key=lambda m: m.alias)]
    data.append({"id": "auto", "object": "model", "created": 0, "owned_by": "crewdesk"})
    return data


class ModelsView(OpenAICompatibleView):
    required_scopes = {"get": READ}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="Models this org may use, with their capabilities",
                   operation_id="v1_models_list")  # fmt: skip
    def get(self, request: Request) -> Response:
        org = request.principal.organization  # type: ignore[attr-defined]
        return Response({"object": "list", "data": _model_entries(org)})


class ModelView(OpenAICompatibleView):
    """GET /v1/models/<id> (the SDKs' `models.retrieve`): one entry of the list; a model this org cannot use is
    a 404, as OpenAI answers for a model that does not exist."""

    required_scopes = {"get": READ}

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="One model this org may use, with its capabilities")
    def get(self, request: Request, model_id: str) -> Response:
        for entry in _model_entries(request.principal.organization):  # type: ignore[attr-defined]
            if entry["id"] == model_id:
                return Response(entry)
        raise NotFound(f"The model '{storable(model_id)[:200]}' does not exist or this org cannot use it.",
                       code="model_not_found", details={"param": "model"})  # fmt: skip


@extend_schema_field(
    {
        # The gateway's count and length limits apply too (400), within the API's body limit (413).
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        ]
    }
)
class TextOrTexts(serializers.JSONField):
    pass


class EmbeddingsIn(StrictSerializer):
    model = serializers.CharField(max_length=64, default=gateway.DEFAULT_EMBEDDING_MODEL)
    input = TextOrTexts()
    dimensions = serializers.IntegerField(required=False, min_value=1, max_value=4096, default=384)
    encoding_format = serializers.ChoiceField(choices=["float", "base64"], default="float")
    user = serializers.CharField(required=False, max_length=256)

    def validate_input(self, value: Any) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise serializers.ValidationError("A string or a list of strings (token arrays are not supported).")
        return texts


class EmbeddingsView(OpenAICompatibleView):
    required_scopes = {"post": ASK}
    rate_limit_endpoints = {"post": "embeddings"}

    @extend_schema(request=EmbeddingsIn, responses=OpenApiTypes.OBJECT, summary="OpenAI-compatible embeddings")
    def post(self, request: Request) -> Response:
        serializer = EmbeddingsIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = gateway.embed(
            caller=gateway.Caller.of(request.principal, "embed"),  # type: ignore[attr-defined]
            model=data["model"],
            texts=data["input"],
            dimensions=data["dimensions"],
        )
        return Response(embeddings_body(result, data["encoding_format"]))


def embeddings_body(result: gateway.GatewayEmbeddings, encoding_format: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": openai_compat.encode_embedding(v, encoding_format)}
            for i, v in enumerate(result.vectors)
        ],
        "model": result.model,
        "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens},
        "crewdesk": {"call_id": result.call_id, "engine": result.engine},
    }


# --- Crewdesk's own API ------------------------------------------------------------------------------------


class GenerateIn(StrictSerializer):
    model = serializers.CharField(max_length=64, default="default")
    messages = serializers.ListField(child=MessageIn(), required=False, max_length=gateway.MAX_MESSAGES)
    prompt = serializers.CharField(required=False, max_length=2_000_000)
    stream = serializers.BooleanField(default=False)
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    temperature = serializers.FloatField(required=False, min_value=0, max_value=2)
    complexity = serializers.ChoiceField(choices=["low", "normal", "high"], required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("messages")) == bool(attrs.get("prompt")):
            raise serializers.ValidationError({"prompt": ["Give either `prompt` or `messages`, not both."]})
        return attrs


class GenerateView(OrgScopedAPIView):
    authentication_classes = [ApiKeyAuthentication, CsrfSessionAuthentication]
    required_scopes = {"post": ASK}
    rate_limit_endpoints = {"post": "generate"}

    @extend_schema(request=GenerateIn, responses=OpenApiTypes.OBJECT, summary="Generate (JSON, or SSE with stream)")
    def post(self, request: Request) -> Any:
        serializer = GenerateIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        messages = data.get("messages") or [{"role": "user", "content": data["prompt"]}]
        chat = ChatRequest(
            messages=[{"role": m["role"], "content": m["content"]} for m in messages],
            max_tokens=data.get("max_tokens"),
            temperature=data.get("temperature"),
        )
        caller = gateway.Caller.of(request.principal, "generate")  # type: ignore[attr-defined]
        options = {"bypass_cache": _bypass_cache(request), "complexity": data.get("complexity")}
        trace = tracing.for_caller(caller, "generate", "Generate")
        if not data["stream"]:
            with tracing.trace(defer=True, **trace) as recorder:
                result = gateway.chat(caller=caller, model=data["model"], request=chat, defer_records=True, **options)
            return _recorded_after_send(
                result,
                Response(
                    {
                        "id": result.call_id,
                        "model": result.model,
                        "text": result.text,
                        "finish_reason": result.finish_reason,
                        "usage": _usage(result.usage),
                        "cached": result.cached,
                        "engine": result.engine,
                    }
                ),
                recorder,
            )
        stream = tracing.traced_call(tracing.start(**trace), lambda: gateway.chat_stream(
            caller=caller, model=data["model"], request=chat, defer_records=True, **options))  # fmt: skip
        first = next(stream)
        return sse_response(_generate_events(first, stream))


def _generate_events(first: Any, stream: Generator[Any, None, None]) -> Iterator[bytes]:
    try:
        for item in itertools.chain([first], stream):
            if isinstance(item, gateway.GatewayStreamEnd):
                done = {"type": "done", "id": item.call_id, "model": item.model, "usage": _usage(item.usage)}
                yield sse({**done, "finish_reason": item.finish_reason, "cached": item.cached, "engine": item.engine})
                return
            yield sse({"type": "delta", "text": item})
    except LLMError as error:
        yield sse({"type": "error", "error": {"code": error.kind, "message": error.message}})
    finally:
        stream.close()


class AISettingsOut(serializers.Serializer):
    pii_policy = serializers.CharField(help_text="mask (default), block or off")
    injection_guard = serializers.ChoiceField(choices=OrgLLMSettings.Guard.values, help_text="off, flag or block")
    moderation_guard = serializers.ChoiceField(choices=OrgLLMSettings.Guard.values, help_text="off, flag or block")
    denied_keywords = serializers.ListField(child=serializers.CharField())
    denied_topics = serializers.ListField(child=serializers.CharField())
    pii_phone_regions = serializers.ListField(
        child=serializers.CharField(), help_text="Regions whose national phone numbers are recognised, in order."
    )
    pii_phone_regions_default = serializers.ListField(
        child=serializers.CharField(), help_text="The server's regions, used while pii_phone_regions is empty."
    )
    pii_mask_names = serializers.BooleanField(help_text="Person names announced by a cue are masked too.")
    prompt_visibility = serializers.ChoiceField(choices=OrgLLMSettings.PromptVisibility.values,
                                                help_text="Who reads prompts and answers in the request log: "
                                                "admins (default), owners or nobody; owners change it.")  # fmt: skip


class StrictBooleanField(serializers.BooleanField):
    """true or false, not DRF's "yes", 1 or "on" (the schema says boolean)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class AISettingsIn(StrictSerializer):
    pii_policy = serializers.ChoiceField(choices=OrgLLMSettings.PiiPolicy.values, required=False)
    injection_guard = serializers.ChoiceField(choices=OrgLLMSettings.Guard.values, required=False)
    moderation_guard = serializers.ChoiceField(choices=OrgLLMSettings.Guard.values, required=False)
    denied_keywords = serializers.ListField(child=serializers.CharField(max_length=100), required=False,
                                            max_length=services.MAX_DENIED_KEYWORDS)  # fmt: skip
    denied_topics = serializers.ListField(child=serializers.CharField(max_length=200), required=False,
                                          max_length=services.MAX_DENIED_TOPICS)  # fmt: skip

    pii_phone_regions = serializers.ListField(
        child=serializers.CharField(max_length=3),
        max_length=services.MAX_PHONE_REGIONS,
        required=False,
        help_text="ISO 3166 region codes such as US, GB, DE, tried in order; [] for the server's default.",
    )
    pii_mask_names = StrictBooleanField(required=False)
    prompt_visibility = serializers.ChoiceField(choices=OrgLLMSettings.PromptVisibility.values, required=False)


def _ai_settings(row: OrgLLMSettings) -> dict[str, Any]:
    names = ("pii_policy", "pii_phone_regions", "pii_mask_names", "injection_guard", "moderation_guard",
             "denied_keywords", "denied_topics", "prompt_visibility")  # fmt: skip
    return {name: getattr(row, name) for name in names} | {
        "pii_phone_regions_default": list(settings.LLM_PII_PHONE_REGIONS)
    }


class AISettingsView(OrgScopedAPIView):
    """How the gateway treats the org's AI requests: personal data (PII policy) and the guardrails (admins
    change them; audited). PATCH changes only the fields it is given."""

    required_scopes = {"get": READ, "patch": ADMIN}

    @extend_schema(responses=AISettingsOut)
    def get(self, request: Request) -> Response:
        return Response(_ai_settings(config.current().policy(request.org)))  # type: ignore[attr-defined]

    @extend_schema(request=AISettingsIn, responses=AISettingsOut)
    def patch(self, request: Request) -> Response:
        serializer = AISettingsIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        principal = request.principal  # type: ignore[attr-defined]
        origin = request_origin(request)
        with transaction.atomic():
            services.pii_policy_set(principal=principal, policy=data.pop("pii_policy", None),
                                    phone_regions=data.pop("pii_phone_regions", None),
                                    mask_names=data.pop("pii_mask_names", None), origin=origin)  # fmt: skip
            if "prompt_visibility" in data:  # owners only (saas/llm/services.py)
                services.prompt_visibility_set(principal=principal, visibility=data.pop("prompt_visibility"),
                                               origin=origin)  # fmt: skip
            row = services.guardrails_set(principal=principal, changes=data, origin=origin)
        return Response(_ai_settings(row))
