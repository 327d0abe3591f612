"""Ingestion by real Celery workers: an upload to a ready document, and a worker killed in the middle."""

import signal
import time
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from documents import ingestion, services
from documents.models import Chunk, Document
from saas.llm.models import ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key, key_client
from tests.accounts.factories import OrganizationFactory
from tests.conftest import BIN_DIR, LiveProcess, start_process, subprocess_env
from tests.documents import files

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _wait_for_status(document_id, statuses: set[str], timeout: float = 90.0) -> Document:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = Document.all_orgs.get(pk=document_id)
        if document.status in statuses:
            return document
        time.sleep(0.2)
    raise AssertionError(f"document {document_id} stayed {document.status!r} past the deadline")


def test_an_upload_is_ingested_by_the_worker(celery_worker_process):
    sync_registry(ModelConfig)  # a flushed test database has lost the seeded registry
    org = OrganizationFactory()
    client = key_client(issue_key(org, scopes=["read", "documents:write"]).secret)
    data = files.pdf(["Cover.", "Refunds take 30 days from the purchase date."])
    response = client.post("/api/v1/documents", {"file": SimpleUploadedFile("refunds.pdf", data)}, format="multipart")
    assert response.status_code == 202
    document = _wait_for_status(response.json()["id"], {"ready", "failed"})
    assert document.status == "ready", document.failure_reason
    assert document.pages == 2 and Chunk.all_orgs.filter(document=document).count() == document.chunk_count == 2


@pytest.fixture
def own_queue():
    """Tasks sent by this test go to a queue that only this test's workers consume."""
    from saas.celery import app

    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue = f"crewdesk-kill-{uuid.uuid4().hex[:8]}"
    yield queue
    app.conf.task_default_queue = previous


def test_a_worker_killed_mid_ingestion_leaves_no_half_document(tmp_path, fake_server, settings, own_queue):
    """The worker dies (SIGKILL) between embedding batches: the document keeps no partial chunks, the watchdog
    queues it again, and another worker finishes it, with each chunk once."""
    from tests.llm.conftest import FakeControl

    sync_registry(ModelConfig)
    ModelConfig.objects.create(alias="test-embed", kind="embedding", upstream="openai", upstream_model="fake-embed",
                               tier="small", context_window=8192)  # fmt: skip
    fake = FakeControl(fake_server)
    fake.reset()
    fake.config(latency=0.4)  # each embedding call takes a while: time to pull the plug in the middle
    queue = own_queue
    env = subprocess_env(DOCUMENTS_EMBEDDING_MODEL="test-embed", DOCUMENTS_EMBED_BATCH="1",
                         LLM_OPENAI_BASE_URL=fake_server.base_url, LLM_OPENAI_API_KEY="sk-test")  # fmt: skip

    def worker(name: str) -> LiveProcess:
        return start_process(
            [str(BIN_DIR / "celery"), "-A", "saas", "worker", "--pool", "solo", "--without-gossip", "--without-mingle",
             "--loglevel", "INFO", "--hostname", f"{name}-{queue}@%h", "--queues", queue],
            tmp_path / f"{name}.log", env,
        )  # fmt: skip

    org = OrganizationFactory()
    text = "\n\n".join(f"# Part {i}\n\nFact number {i} about refunds and travel." for i in range(8))
    first = worker("first")
    try:
        document = services.document_upload(org=org, data=text.encode(), filename="parts.md")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            document.refresh_from_db()
            if document.status == "processing" and document.progress >= 40:
                break
            assert first.process.poll() is None, first.log()[-3000:]
            time.sleep(0.05)
        else:
            raise AssertionError(f"ingestion did not get going: {document.status} {document.progress}%")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    finally:
        first.stop()

    document.refresh_from_db()
    assert document.status == "processing" and not Chunk.all_orgs.filter(document=document).exists()
    settings.DOCUMENTS_STALLED_AFTER = 0
    assert ingestion.documents_recover_stalled()["requeued"] == 1

    second = worker("second")
    try:
        finished = _wait_for_status(document.pk, {"ready", "failed"})
    finally:
        second.stop()
        fake.config(latency=0)
    assert finished.status == "ready", finished.failure_reason
    positions = list(Chunk.all_orgs.filter(document=document).values_list("position", flat=True))
    assert sorted(positions) == list(range(8)) and finished.chunk_count == 8 and finished.attempts == 2
