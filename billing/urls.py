from django.urls import path

from billing import api

api_urlpatterns = [
    path("usage", api.UsageView.as_view(), name="usage"),
]
