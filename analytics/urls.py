from django.urls import path
from rest_framework.routers import SimpleRouter

from analytics import api, eval_views, insights_api, prompt_api, prompt_views, trace_api, trace_views, views

router = SimpleRouter(trailing_slash=False)
router.register("datasets", api.DatasetViewSet, basename="dataset")
router.register("eval-cases", api.CaseViewSet, basename="eval-case")
router.register("eval-runs", api.EvalRunViewSet, basename="eval-run")
router.register("traces", trace_api.TraceViewSet, basename="trace")

org_patterns = [
    path("", views.overview_page, name="org-dashboard"),
    path("activity/", views.activity_fragment, name="org-activity"),
    path("samples/", views.samples_load, name="org-samples"),
    path("onboarding/dismiss/", views.onboarding_dismiss, name="org-onboarding-dismiss"),
    path("evals/", eval_views.evals_index, name="evals"),
    path("evals/datasets/new/", eval_views.dataset_new, name="eval-dataset-new"),
    path("evals/datasets/<uuid:dataset_id>/", eval_views.dataset_page, name="eval-dataset"),
    path("evals/datasets/<uuid:dataset_id>/settings/", eval_views.dataset_settings, name="eval-dataset-settings"),
    path("evals/datasets/<uuid:dataset_id>/delete/", eval_views.dataset_delete, name="eval-dataset-delete"),
    path("evals/datasets/<uuid:dataset_id>/cases/new/", eval_views.case_new, name="eval-case-new"),
    path("evals/datasets/<uuid:dataset_id>/cases/<uuid:case_id>/", eval_views.case_edit, name="eval-case-edit"),
    path(
        "evals/datasets/<uuid:dataset_id>/cases/<uuid:case_id>/delete/", eval_views.case_delete, name="eval-case-delete"
    ),
    path("evals/datasets/<uuid:dataset_id>/import/", eval_views.cases_import, name="eval-cases-import"),
    path("evals/datasets/<uuid:dataset_id>/run/", eval_views.run_start, name="eval-run-start"),
    path("evals/runs/<uuid:run_id>/", eval_views.run_page, name="eval-run"),
    path("evals/runs/<uuid:run_id>/diff/", eval_views.run_diff, name="eval-run-diff"),
    path("evals/feedback/<uuid:feedback_id>/case/", eval_views.case_from_feedback, name="eval-case-from-feedback"),
    path("evals/requests/<uuid:call_id>/case/", eval_views.case_from_call, name="eval-case-from-request"),
    path("insights/", views.insights_page, name="insights"),
    path("traces/", trace_views.trace_list_page, name="trace-list"),
    path("traces/<uuid:trace_id>/", trace_views.trace_detail_page, name="trace-detail"),
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
    path("insights", insights_api.InsightsView.as_view(), name="insights-api"),
    path("experiments", prompt_api.ExperimentListView.as_view(), name="experiments"),
    path("experiments/<uuid:experiment_id>", prompt_api.ExperimentDetailView.as_view(), name="experiment"),
    path("experiments/<uuid:experiment_id>/end", prompt_api.ExperimentEndView.as_view(), name="experiment-end-api"),
    *router.urls,  # datasets, eval-cases, eval-runs (analytics/api.py), traces (analytics/trace_api.py)
]
