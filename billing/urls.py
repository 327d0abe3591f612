from django.urls import path

from billing import api, views, webhooks

api_urlpatterns = [
    path("usage", api.UsageView.as_view(), name="usage"),
    path("usage/daily", api.UsageDailyView.as_view(), name="usage-daily"),
]

org_patterns = [
    path("billing/", views.billing_page, name="billing"),
    path("billing/checkout", views.checkout, name="billing-checkout"),
    path("billing/portal", views.portal, name="billing-portal"),
    path("billing/spend-cap", views.spend_cap, name="billing-spend-cap"),
]

# dj-stripe's endpoint (one per WebhookEndpoint row, by its uuid), answering refusals in our error shape.
webhook_urlpatterns = [
    path("webhook/<uuid:uuid>/", webhooks.StripeWebhookView.as_view(), name="stripe-webhook"),
]
