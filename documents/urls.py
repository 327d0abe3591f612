from django.urls import path
from rest_framework.routers import SimpleRouter

from documents import api

router = SimpleRouter(trailing_slash=False)
router.register("collections", api.CollectionViewSet, basename="collection")
router.register("documents", api.DocumentViewSet, basename="document")

api_urlpatterns = [
    path("search", api.SearchView.as_view(), name="search"),
    path("ask", api.AskView.as_view(), name="ask"),
    *router.urls,
]
