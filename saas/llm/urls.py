from django.urls import path
from rest_framework.routers import SimpleRouter

from saas.llm import api, api_requests, provider_api, provider_views, views

router = SimpleRouter(trailing_slash=False)
router.register("requests", api_requests.RequestLogViewSet, basename="llm-request")

# Mounted at /v1/: the OpenAI-compatible surface.
openai_urlpatterns = [
    path("chat/completions", api.ChatCompletionsView.as_view(), name="openai-chat-completions"),
    path("models", api.ModelsView.as_view(), name="openai-models"),
    path("models/<path:model_id>", api.ModelView.as_view(), name="openai-model"),  # org aliases hold slashes
    path("embeddings", api.EmbeddingsView.as_view(), name="openai-embeddings"),
]

# Mounted at /api/v1/ with the rest of Crewdesk's API.
api_urlpatterns = [
    path("generate", api.GenerateView.as_view(), name="generate"),
    path("ai-settings", api.AISettingsView.as_view(), name="ai-settings"),
    *router.urls,
    path("providers", provider_api.ProviderListView.as_view(), name="providers"),
    path("providers/<uuid:provider_id>", provider_api.ProviderDetailView.as_view(), name="provider"),
    path("providers/<uuid:provider_id>/test", provider_api.ProviderTestView.as_view(), name="provider-test"),
]

# Mounted at /o/<org_slug>/ with the team's pages.
org_patterns = [
    path("settings/pii/", views.org_pii_policy, name="org-pii-policy"),
    path("settings/guardrails/", views.org_guardrails, name="org-guardrails"),
    path("settings/prompt-visibility/", views.org_prompt_visibility, name="org-prompt-visibility"),
    path("requests/", views.request_log, name="request-log"),
    path("requests/<uuid:call_id>/", views.request_detail, name="request-detail"),
    path("settings/providers/", provider_views.provider_list, name="org-providers"),
    path("settings/providers/<uuid:provider_id>/", provider_views.provider_detail, name="org-provider"),
    path("settings/providers/<uuid:provider_id>/edit/", provider_views.provider_edit, name="org-provider-edit"),
    path("settings/providers/<uuid:provider_id>/test/", provider_views.provider_test, name="org-provider-test"),
    path("settings/providers/<uuid:provider_id>/models/", provider_views.provider_models, name="org-provider-models"),
    path("settings/providers/<uuid:provider_id>/delete/", provider_views.provider_delete, name="org-provider-delete"),
]
