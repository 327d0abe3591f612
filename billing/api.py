from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from billing import selectors
from saas.core.api import OrgScopedAPIView


class UsageView(OrgScopedAPIView):
    """This billing period's AI requests (used, included, left), cache hits, model cost and projected bill,
    per feature and per model."""

    required_scopes = {"get": "read"}

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(selectors.usage_summary(org=request.org))  # type: ignore[attr-defined]
