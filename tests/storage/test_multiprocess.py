"""Scale-out (#18 acceptance): two web processes (daphne) and two Celery workers, separate processes sharing
only PostgreSQL, Redis and the S3 store (each has a local media directory of its own, which stays empty). An
upload through one web process is ingested by a worker and downloaded through the other web process; the
worker's metrics (its task counts and the gateway calls it made) are on its /metrics; a delete through the
first web process removes the object from the bucket."""

import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from saas.llm.models import ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key
from tests.accounts.factories import OrganizationFactory
from tests.conftest import free_port, running_daphne, wait_until
from tests.documents import files
from tests.storage.conftest import Backend, start_worker
from tests.storage.test_worker_metrics import TOKEN, _scrape, _value

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SENTENCE = "Travel bookings are refunded within thirty days."


def _files_under(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()] if directory.exists() else []


def test_upload_on_one_web_ingest_on_a_worker_download_on_the_other(tmp_path, fake_server, s3_endpoint, s3_url,
                                                                    own_queue):  # fmt: skip
    sync_registry(ModelConfig)
    bucket = s3_url.split("@", 1)[1].split("/", 1)[0]
    store = Backend("s3", s3_url, endpoint=s3_endpoint, bucket=bucket, prefix="media")
    media = {name: tmp_path / f"media-{name}" for name in ("web1", "web2", "worker1", "worker2")}
    shared = {"STORAGE_URL": s3_url, "CELERY_TASK_DEFAULT_QUEUE": own_queue, "METRICS_TOKEN": TOKEN}
    ports = {"worker1": free_port(), "worker2": free_port()}
    org = OrganizationFactory()
    key = issue_key(org, scopes=["read", "documents:write"]).secret
    auth = {"Authorization": f"Bearer {key}"}
    data = files.pdf(["Cover page.", SENTENCE])

    with ExitStack() as stack:
        workers = []
        for name in ("worker1", "worker2"):
            worker = start_worker(tmp_path, name, own_queue, TEST_MEDIA_ROOT=str(media[name]),
                                  WORKER_METRICS_PORT=str(ports[name]), WORKER_METRICS_ADDRESS="127.0.0.1",
                                  **shared)  # fmt: skip
            stack.callback(worker.stop)
            workers.append(worker)
        webs = []
        for name in ("web1", "web2"):
            (tmp_path / name).mkdir()
            webs.append(stack.enter_context(running_daphne(tmp_path / name, fake_server,
                                                           TEST_MEDIA_ROOT=str(media[name]), **shared)))  # fmt: skip
        for name, worker in zip(("worker1", "worker2"), workers, strict=True):
            url = f"http://127.0.0.1:{ports[name]}/metrics"
            wait_until(lambda url=url: _scrape(url)[0] == 200, timeout=120, what=name, process=worker)
        first, second = webs

        uploaded = httpx.post(f"{first.url}/api/v1/documents", headers=auth, timeout=60,
                              files={"file": ("refunds.pdf", data, "application/pdf")})  # fmt: skip
        assert uploaded.status_code == 202, uploaded.text
        document_id = uploaded.json()["id"]

        def ready_on_the_other_web() -> bool:
            status = httpx.get(f"{second.url}/api/v1/documents/{document_id}", headers=auth, timeout=10).json()
            assert status["status"] != "failed", status
            return bool(status["status"] == "ready")

        deadline = time.monotonic() + 240
        while not ready_on_the_other_web():
            assert time.monotonic() < deadline, "not ingested in time:\n" + workers[0].log()[-3000:]
            for worker in workers:
                assert worker.process.poll() is None, worker.log()[-3000:]
            time.sleep(0.5)

        downloaded = httpx.get(f"{second.url}/api/v1/documents/{document_id}/file", headers=auth, timeout=60)
        assert downloaded.status_code == 200 and downloaded.content == data
        assert downloaded.headers["content-length"] == str(len(data))

        # At rest in the bucket: our ciphertext (and the bucket's own encryption), never the text or the PDF.
        name = f"orgs/{org.pk}/documents/{document_id}"
        stored = store.raw(name)
        assert data not in stored and SENTENCE.encode()[:20] not in stored
        assert store.head(name)["ServerSideEncryption"] == "AES256"
        # Nothing went through a local disk: every process's own media directory is empty.
        assert [path for directory in media.values() for path in _files_under(directory)] == []

        # The worker that ingested exports its task count and the gateway's embedding calls it made.
        scrapes = [_scrape(f"http://127.0.0.1:{port}/metrics")[1] for port in ports.values()]
        ingested = sum(_maybe(text, "crewdesk_celery_tasks_total", task="documents.ingest_document",
                              state="succeeded") for text in scrapes)  # fmt: skip
        assert ingested == 1
        assert sum(_maybe(text, "crewdesk_llm_requests_total", feature="ingest") for text in scrapes) >= 1
        assert all("crewdesk_celery_queue_length" in text for text in scrapes)

        deleted = httpx.delete(f"{first.url}/api/v1/documents/{document_id}", headers=auth, timeout=30)
        assert deleted.status_code == 204
        assert not store.exists(name)
        gone = httpx.get(f"{second.url}/api/v1/documents/{document_id}/file", headers=auth, timeout=30)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def _maybe(text: str, name: str, **labels: str) -> float:
    try:
        return _value(text, name, **labels)
    except AssertionError:
        return 0.0
