from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from agents import urls as agents_urls
from analytics import urls as analytics_urls
from billing import urls as billing_urls
from documents import urls as documents_urls
from saas.core import views as core_views
from saas.llm import urls as llm_urls

# The admin signs in through allauth, as allauth recommends (docs: "Admin"): its own login view would skip the
# two-factor step and the sign-in rate limits. Unauthenticated visitors are sent to /accounts/login/?next=...,
# a signed-in non-staff account gets 403.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("metrics", core_views.metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("accounts.api_urls")),
    path("api/v1/", include(llm_urls.api_urlpatterns)),
    path("api/v1/", include(agents_urls.api_urlpatterns)),
    path("api/v1/", include(documents_urls.api_urlpatterns)),
    path("api/v1/", include(billing_urls.api_urlpatterns)),
    path("api/v1/", include(analytics_urls.api_urlpatterns)),
    path("o/<slug:org_slug>/", include(analytics_urls.org_patterns)),
    path("o/<slug:org_slug>/", include(agents_urls.org_patterns)),
    path("o/<slug:org_slug>/", include(documents_urls.org_patterns)),
    path("o/<slug:org_slug>/", include(billing_urls.org_patterns)),
    path("o/<slug:org_slug>/", include(llm_urls.org_patterns)),
    path("v1/", include(llm_urls.openai_urlpatterns)),
    path("stripe/", include(billing_urls.webhook_urlpatterns)),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("", include("accounts.urls")),
]

handler404 = "saas.core.errors.handler404"
handler500 = "saas.core.errors.handler500"
