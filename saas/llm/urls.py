from django.urls import path
from rest_framework.routers import SimpleRouter

from saas.llm import api, api_requests, views

router = SimpleRouter(trailing_slash=False)
router.register("requests", api_requests.RequestLogViewSet, basename="llm-request")

# Mounted at /v1/: the OpenAI-compatible surface.
openai_urlpatterns = [
    path("chat/completions", api.ChatCompletionsView.as_view(), name="openai-chat-completions"),
    path("models", api.ModelsView.as_view(), name="openai-models"),
    path("embeddings", api.EmbeddingsView.as_view(), name="openai-embeddings"),
]

# Mounted at /api/v1/ with the rest of Crewdesk's API.
api_urlpatterns = [
    path("generate", api.GenerateView.as_view(), name="generate"),
    path("ai-settings", api.AISettingsView.as_view(), name="ai-settings"),
    *router.urls,
]

# Mounted at /o/<org_slug>/ with the team's pages.
org_patterns = [
    path("settings/pii/", views.org_pii_policy, name="org-pii-policy"),
    path("settings/guardrails/", views.org_guardrails, name="org-guardrails"),
    path("settings/prompt-visibility/", views.org_prompt_visibility, name="org-prompt-visibility"),
    path("requests/", views.request_log, name="request-log"),
    path("requests/<uuid:call_id>/", views.request_detail, name="request-detail"),
]
