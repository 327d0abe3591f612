from rest_framework.routers import SimpleRouter

from documents import api

router = SimpleRouter(trailing_slash=False)
router.register("collections", api.CollectionViewSet, basename="collection")
router.register("documents", api.DocumentViewSet, basename="document")

api_urlpatterns = [*router.urls]
