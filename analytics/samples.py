"""Sample documents a new team can load in one click (the Overview's checklist): small, well-written files
shipped in analytics/samples/, uploaded into a "Samples" collection through the normal document service, so
they are checked, stored, counted against storage and ingested by the worker like any upload."""

from pathlib import Path
from typing import Any

from documents import services as documents
from documents.models import Collection, Document
from saas.core.errors import Conflict

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
COLLECTION = "Samples"
DESCRIPTION = "Example documents to try Ask and Chat with; delete them whenever you like."


def sample_files() -> list[Path]:
    return sorted(SAMPLES_DIR.glob("*.md"))


def _title(path: Path) -> str:
    first = path.read_text(encoding="utf-8").lstrip().splitlines()[0]
    return first.lstrip("# ").strip() or path.stem


def samples_collection(*, org: Any) -> Collection:
    found = Collection.objects.for_org(org).filter(name__iexact=COLLECTION).first()
    if found is not None:
        return found
    try:
        return documents.collection_create(org=org, name=COLLECTION, description=DESCRIPTION)
    except Conflict:  # a second click in flight created it first
        return Collection.objects.for_org(org).get(name__iexact=COLLECTION)


def samples_load(*, org: Any, user: Any) -> list[Document]:
    """Upload the samples not yet in the team's Samples collection; loading twice adds nothing. Returns the
    documents uploaded now (the ingestion is queued when each upload commits)."""
    collection = samples_collection(org=org)
    loaded = []
    for path in sample_files():
        try:
            loaded.append(documents.document_upload(
                org=org, data=path.read_bytes(), filename=path.name, collection=collection, title=_title(path),
                user=user,
            ))  # fmt: skip
        except Conflict:  # already loaded (same bytes in the same collection)
            continue
    return loaded
