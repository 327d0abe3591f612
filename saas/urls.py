from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from accounts import views as account_views
from saas.core import views as core_views

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("metrics", core_views.metrics, name="metrics"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("", account_views.home, name="home"),
]

handler404 = "saas.core.errors.handler404"
handler500 = "saas.core.errors.handler500"
