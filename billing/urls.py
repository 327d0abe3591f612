from django.urls import path

from billing import api, views

api_urlpatterns = [
    path("usage", api.UsageView.as_view(), name="usage"),
]

org_patterns = [
    path("billing/", views.billing_page, name="billing"),
]
