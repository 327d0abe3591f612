from django.urls import path

from saas.llm import api, views

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
]

# Mounted at /o/<org_slug>/ with the team's pages.
org_patterns = [
    path("settings/pii/", views.org_pii_policy, name="org-pii-policy"),
    path("settings/guardrails/", views.org_guardrails, name="org-guardrails"),
    path("requests/", views.request_log, name="request-log"),
]
