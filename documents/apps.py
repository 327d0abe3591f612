from typing import Any

from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "documents"

    def ready(self) -> None:
        from billing.selectors import register_storage_counter

        register_storage_counter(_stored_bytes)

        from documents.privacy import STORE
        from saas.core.privacy import register_store

        register_store(STORE)


def _stored_bytes(org: Any) -> int:
    from django.db.models import Sum

    from documents.models import Document

    return int(Document.objects.for_org(org).aggregate(total=Sum("size_bytes"))["total"] or 0)
