from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts import api

router = SimpleRouter(trailing_slash=False)
router.register("members", api.MemberViewSet, basename="member")
router.register("invitations", api.InvitationViewSet, basename="invitation")
router.register("keys", api.ApiKeyViewSet, basename="api-key")
router.register("audit-events", api.AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("me", api.MeView.as_view(), name="me"),
    path("org", api.OrgView.as_view(), name="org"),
    path("org/transfer-ownership", api.TransferOwnershipView.as_view(), name="org-transfer-ownership"),
    *router.urls,
]
