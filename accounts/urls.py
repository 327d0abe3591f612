from django.urls import include, path

from accounts import audit_views, bell_views, privacy_views, views

org_patterns = [
    path("settings/", views.org_settings, name="org-settings"),
    path("settings/transfer/", views.transfer_ownership, name="org-transfer"),
    path("settings/retention/", privacy_views.org_retention, name="org-retention"),
    path("settings/leave/", views.leave_org, name="org-leave"),
    path("settings/member-content/", privacy_views.org_member_content, name="org-member-content"),
    path("settings/export/", privacy_views.org_export, name="org-export"),
    path("settings/delete/", privacy_views.org_delete, name="org-delete"),
    path("members/", views.members, name="org-members"),
    path("members/invite/", views.invite, name="org-invite"),
    path("members/<uuid:member_id>/role/", views.member_role, name="org-member-role"),
    path("members/<uuid:member_id>/remove/", views.member_remove, name="org-member-remove"),
    path("invitations/<uuid:invitation_id>/revoke/", views.invitation_revoke, name="org-invitation-revoke"),
    path("keys/", views.api_keys, name="org-api-keys"),
    path("keys/<uuid:key_id>/revoke/", views.api_key_revoke, name="org-api-key-revoke"),
    path("keys/<uuid:key_id>/rotate/", views.api_key_rotate, name="org-api-key-rotate"),
    path("keys/<uuid:key_id>/networks/", views.api_key_networks, name="org-api-key-networks"),
    path("audit/", audit_views.audit_log, name="org-audit"),
    path("audit/export.csv", audit_views.audit_export, name="org-audit-export"),
    path("notifications/", bell_views.notification_list, name="notifications"),
    path("notifications/bell/", bell_views.bell, name="notifications-bell"),
    path("notifications/read-all/", bell_views.notifications_read_all, name="notifications-read-all"),
    path("notifications/<uuid:notification_id>/open/", bell_views.notification_open, name="notification-open"),
    path("notifications/<uuid:notification_id>/read/", bell_views.notification_read, name="notification-read"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("orgs/new/", views.org_new, name="org-new"),
    path("privacy/", privacy_views.privacy_notice, name="privacy"),
    path("account/privacy/", privacy_views.account_privacy, name="account-privacy"),
    path("account/privacy/export/", privacy_views.account_export, name="account-export"),
    path("account/exports/<uuid:export_id>/download/", privacy_views.export_download, name="account-export-download"),
    path("account/delete/", privacy_views.account_delete, name="account-delete"),
    path("account/deleted/", privacy_views.account_deleted, name="account-deleted"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation-accept"),
    path("o/<slug:org_slug>/", include(org_patterns)),
]
