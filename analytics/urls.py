from django.urls import path
from rest_framework.routers import SimpleRouter

from analytics import api, eval_views, views

router = SimpleRouter(trailing_slash=False)
router.register("datasets", api.DatasetViewSet, basename="dataset")
router.register("eval-cases", api.CaseViewSet, basename="eval-case")
router.register("eval-runs", api.EvalRunViewSet, basename="eval-run")

# Mounted at /api/v1/.
api_urlpatterns = [*router.urls]

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
]
