"""The OpenAPI schema tells the truth about every operation, once for all of them (DEFAULT_SCHEMA_CLASS).

- Every operation can answer with the one error shape (saas/core/errors.py): 400 (bad input, a malformed
  body, a query or header PostgreSQL cannot store), 401, 403 (a missing scope), 404 (another org's object,
  a bad cursor), 409, 413 (body limit), 429 (rate limits), and 415 where a body is sent. The OpenAI-compatible
  endpoints under /v1/ answer in OpenAI's error shape instead. A view adds its own rarer statuses (402 for a
  plan limit) in its `extend_schema(responses=...)` with `ERROR`.
- Requests are described as our serializers validate them: a StrictSerializer refuses unknown fields
  (`additionalProperties: false`), a CharField that must not be blank needs a character other than space
  (and none may hold NUL), a list that must not be empty has `minItems: 1`, and a PATCH body requires what
  the view requires (no "Patched" components: our PATCH views are not partial updates).
- Request bodies are documented as JSON (an upload declares its multipart body itself): DRF also parses forms,
  but a form cannot say what a nested JSON body says, so the schema promises the one that means the same.
"""

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

from saas.core.api import StrictSerializer

# What DRF's CharField accepts (allow_blank=False, trim_whitespace=True): something besides whitespace, no NUL.
NON_BLANK_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"

ERROR_BODY = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorDetail",
            {
                "code": serializers.CharField(help_text="Stable, machine-readable: `invalid`, `not_found`, ..."),
                "message": serializers.CharField(help_text="For people."),
                "details": serializers.DictField(help_text="`fields` for validation errors, and more per code."),
                "request_id": serializers.CharField(allow_null=True, help_text="Quote it to support."),
            },
        )
    },
)
OPENAI_ERROR_BODY = inline_serializer(
    "OpenAIError",
    {
        "error": inline_serializer(
            "OpenAIErrorDetail",
            {
                "message": serializers.CharField(),
                "type": serializers.CharField(help_text="`invalid_request_error`, `rate_limit_error`, ..."),
                "param": serializers.CharField(allow_null=True),
                "code": serializers.CharField(allow_null=True),
            },
        )
    },
)

ERROR = OpenApiResponse(ERROR_BODY, description="An error, in the one error shape.")
PLAN_LIMIT = OpenApiResponse(ERROR_BODY, description="The org's plan does not allow more: upgrade the plan.")

ERRORS = {
    400: "The request is invalid (`details.fields` names each problem) or malformed.",
    401: "No credentials, or a key or session that is not valid (`WWW-Authenticate: Bearer`).",
    403: "The key or the member's role lacks the scope this needs (`details.required`).",
    404: "Not found, or another org's.",
    409: "Conflicts with the current state.",
    413: "The body is larger than the limit.",
    429: "A rate limit or quota: retry after `Retry-After` seconds.",
}
BODY_ERRORS = {415: "The body's media type is not accepted."}


def _openai_path(path: str) -> bool:
    return path.startswith("/v1/")


class ApiAutoSchema(AutoSchema):
    def map_parsers(self) -> list[Any]:
        return ["application/json"]

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(force_instance(serializer), StrictSerializer):
            schema["additionalProperties"] = False
        return schema

    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction != "request" or not isinstance(schema, dict) or "$ref" in schema:
            return schema
        if isinstance(field, serializers.CharField) and not field.allow_blank and field.trim_whitespace:
            schema.setdefault("pattern", NON_BLANK_TEXT)
        if isinstance(field, serializers.ListField) and not field.allow_empty:
            schema.setdefault("minItems", 1)
        return schema

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        errors = dict(ERRORS)
        if self.method in ("POST", "PUT", "PATCH"):
            errors.update(BODY_ERRORS)
        body = OPENAI_ERROR_BODY if _openai_path(self.path) else ERROR_BODY
        for status, description in sorted(errors.items()):
            if str(status) in responses:
                continue
            response = self._get_response_for_code(body, str(status), direction=direction)
            response["description"] = description
            responses[str(status)] = response
        return responses
