from django.urls import path

from analytics import api, views

org_patterns = [
    path("", views.overview_page, name="org-dashboard"),
    path("activity/", views.activity_fragment, name="org-activity"),
    path("samples/", views.samples_load, name="org-samples"),
    path("onboarding/dismiss/", views.onboarding_dismiss, name="org-onboarding-dismiss"),
    path("insights/", views.insights_page, name="insights"),
]

api_urlpatterns = [
    path("insights", api.InsightsView.as_view(), name="insights-api"),
]
