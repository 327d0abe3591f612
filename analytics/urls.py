from django.urls import path

from analytics import prompt_api, prompt_views, views

org_patterns = [
    path("", views.overview_page, name="org-dashboard"),
    path("activity/", views.activity_fragment, name="org-activity"),
    path("samples/", views.samples_load, name="org-samples"),
    path("onboarding/dismiss/", views.onboarding_dismiss, name="org-onboarding-dismiss"),
    # Prompts and experiments (analytics/prompt_views.py)
    path("prompts/", prompt_views.prompt_index, name="prompt-index"),
    path("prompts/versions/<uuid:version_id>/label/", prompt_views.prompt_label, name="prompt-label"),
    path("prompts/<str:key>/", prompt_views.prompt_detail, name="prompt-detail"),
    path("prompts/<str:key>/edit/", prompt_views.prompt_edit, name="prompt-edit"),
    path("prompts/<str:key>/reset/", prompt_views.prompt_reset, name="prompt-reset"),
    path("prompts/<str:key>/v/<uuid:version_id>/", prompt_views.prompt_version, name="prompt-version"),
    path("experiments/", prompt_views.experiment_index, name="experiment-index"),
    path("experiments/new/", prompt_views.experiment_new, name="experiment-new"),
    path("experiments/<uuid:experiment_id>/", prompt_views.experiment_detail, name="experiment-detail"),
    path("experiments/<uuid:experiment_id>/end/", prompt_views.experiment_end, name="experiment-end"),
]

# Mounted at /api/v1/.
api_urlpatterns = [
    path("prompts", prompt_api.PromptListView.as_view(), name="prompts"),
    path("prompts/<str:key>", prompt_api.PromptDetailView.as_view(), name="prompt"),
    path("prompts/<str:key>/versions", prompt_api.PromptVersionsView.as_view(), name="prompt-versions"),
    path("prompt-versions/<uuid:version_id>", prompt_api.PromptVersionDetailView.as_view(), name="prompt-version-api"),
    path(
        "prompt-versions/<uuid:version_id>/label",
        prompt_api.PromptVersionLabelView.as_view(),
        name="prompt-version-label",
    ),
    path("experiments", prompt_api.ExperimentListView.as_view(), name="experiments"),
    path("experiments/<uuid:experiment_id>", prompt_api.ExperimentDetailView.as_view(), name="experiment"),
    path("experiments/<uuid:experiment_id>/end", prompt_api.ExperimentEndView.as_view(), name="experiment-end-api"),
]
