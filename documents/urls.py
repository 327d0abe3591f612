from django.urls import path
from rest_framework.routers import SimpleRouter

from documents import api, views

router = SimpleRouter(trailing_slash=False)
router.register("collections", api.CollectionViewSet, basename="collection")
router.register("documents", api.DocumentViewSet, basename="document")

api_urlpatterns = [
    path("search", api.SearchView.as_view(), name="search"),
    path("ask", api.AskView.as_view(), name="ask"),
    *router.urls,
]

org_patterns = [
    path("documents/", views.documents_index, name="documents-index"),
    path("documents/collections/new/", views.collection_new, name="collection-new"),
    path("documents/<uuid:document_id>/", views.document_detail, name="document-detail"),
    path("documents/<uuid:document_id>/file/", views.document_file, name="document-file"),
    path("documents/<uuid:document_id>/reindex/", views.document_reindex, name="document-reindex"),
    path("documents/<uuid:document_id>/delete/", views.document_delete, name="document-delete"),
]
