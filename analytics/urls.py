from django.urls import path
from rest_framework.routers import SimpleRouter

from analytics import trace_api, trace_views, views

router = SimpleRouter(trailing_slash=False)
router.register("traces", trace_api.TraceViewSet, basename="trace")

# Mounted at /api/v1/ with the rest of Crewdesk's API.
api_urlpatterns = [*router.urls]

org_patterns = [
    path("", views.overview_page, name="org-dashboard"),
    path("activity/", views.activity_fragment, name="org-activity"),
    path("samples/", views.samples_load, name="org-samples"),
    path("onboarding/dismiss/", views.onboarding_dismiss, name="org-onboarding-dismiss"),
    path("traces/", trace_views.trace_list_page, name="trace-list"),
    path("traces/<uuid:trace_id>/", trace_views.trace_detail_page, name="trace-detail"),
]
