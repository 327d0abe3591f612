from django.urls import path

from analytics import views

org_patterns = [
    path("", views.overview_page, name="org-dashboard"),
    path("activity/", views.activity_fragment, name="org-activity"),
    path("samples/", views.samples_load, name="org-samples"),
    path("onboarding/dismiss/", views.onboarding_dismiss, name="org-onboarding-dismiss"),
]
