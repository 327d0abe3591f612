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
    path("me/delete", api.MeDeleteView.as_view(), name="me-delete"),
    path("me/export", api.MeExportView.as_view(), name="me-export"),
    path("me/exports", api.MeExportsView.as_view(), name="me-exports"),
    path("me/exports/<uuid:pk>", api.MeExportDetailView.as_view(), name="me-export-detail"),
    path("me/exports/<uuid:pk>/download", api.MeExportDownloadView.as_view(), name="me-export-download"),
    path("org/export", api.OrgExportView.as_view(), name="org-export"),
    path("org/privacy", api.OrgPrivacyView.as_view(), name="org-privacy"),
    path("org/delete", api.OrgDeleteView.as_view(), name="org-delete"),
    path("org", api.OrgView.as_view(), name="org"),
    path("org/transfer-ownership", api.TransferOwnershipView.as_view(), name="org-transfer-ownership"),
    *router.urls,
]
