from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts import api, privacy_api

router = SimpleRouter(trailing_slash=False)
router.register("members", api.MemberViewSet, basename="member")
router.register("invitations", api.InvitationViewSet, basename="invitation")
router.register("keys", api.ApiKeyViewSet, basename="api-key")
router.register("audit-events", api.AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("me", api.MeView.as_view(), name="me"),
    path("me/delete", privacy_api.MeDeleteView.as_view(), name="me-delete"),
    path("me/export", privacy_api.MeExportView.as_view(), name="me-export"),
    path("me/exports", privacy_api.MeExportsView.as_view(), name="me-exports"),
    path("me/exports/<uuid:pk>", privacy_api.MeExportDetailView.as_view(), name="me-export-detail"),
    path("me/exports/<uuid:pk>/download", privacy_api.MeExportDownloadView.as_view(), name="me-export-download"),
    path("org/export", privacy_api.OrgExportView.as_view(), name="org-export"),
    path("org/privacy", privacy_api.OrgPrivacyView.as_view(), name="org-privacy"),
    path("org/delete", privacy_api.OrgDeleteView.as_view(), name="org-delete"),
    path("org", api.OrgView.as_view(), name="org"),
    path("org/transfer-ownership", api.TransferOwnershipView.as_view(), name="org-transfer-ownership"),
    *router.urls,
]
