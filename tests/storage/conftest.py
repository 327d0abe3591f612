"""The file storage under test: local disk (the embedded default) and S3, the latter against moto's S3 served
on loopback (a real HTTP server speaking the S3 protocol; boto3 reaches it as it would AWS or MinIO)."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from django.conf import settings as django_settings
from django.core.files.storage import default_storage

from saas.settings.storage import storage_from_url
from tests.conftest import free_port

KEY_ID, SECRET = "test-key-id", "test-secret"  # moto accepts any credentials; these travel in STORAGE_URL


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                        aws_secret_access_key=SECRET)  # fmt: skip


@pytest.fixture
def s3_url(s3_endpoint) -> str:
    """A fresh bucket on the local S3, as a STORAGE_URL (credentials in the URL, server-side encryption on)."""
    bucket = f"crewdesk-test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{KEY_ID}:{SECRET}@{bucket}/media?endpoint_url={s3_endpoint}&region=us-east-1&addressing_style=path"


@dataclass
class Backend:
    """Where the test's files go, and a way round the app to read and change what is stored."""

    kind: str
    url: str
    endpoint: str = ""
    bucket: str = ""
    prefix: str = ""

    def raw(self, name: str) -> bytes:
        if self.kind == "local":
            return (Path(django_settings.MEDIA_ROOT) / name).read_bytes()
        body = s3_client(self.endpoint).get_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")["Body"]
        return bytes(body.read())

    def put_raw(self, name: str, data: bytes) -> None:
        if self.kind == "local":
            path = Path(django_settings.MEDIA_ROOT) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            s3_client(self.endpoint).put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=data)

    def exists(self, name: str) -> bool:
        if self.kind == "local":
            return (Path(django_settings.MEDIA_ROOT) / name).exists()
        listing = s3_client(self.endpoint).list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/{name}")
        return bool(listing.get("KeyCount"))

    def head(self, name: str) -> dict:
        return s3_client(self.endpoint).head_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")

    def remove(self, name: str) -> None:
        if self.kind == "local":
            (Path(django_settings.MEDIA_ROOT) / name).unlink()
        else:
            s3_client(self.endpoint).delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")


@pytest.fixture(params=["local", "s3"])
def backend(request, settings) -> Backend:
    """The default storage switched to local disk or to a fresh S3 bucket for this test."""
    if request.param == "local":
        url = ""
        chosen = Backend("local", url)
        # A directory of its own: files written under test keys stay out of the shared test media.
        settings.MEDIA_ROOT = str(request.getfixturevalue("tmp_path") / "media")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        url = request.getfixturevalue("s3_url")
        bucket = url.split("@", 1)[1].split("/", 1)[0]
        chosen = Backend("s3", url, endpoint=endpoint, bucket=bucket, prefix="media")
    settings.STORAGE_URL = url
    settings.STORAGES = {**settings.STORAGES, "default": storage_from_url(url, media_root=settings.MEDIA_ROOT)}
    assert type(default_storage).__name__ and default_storage.__class__  # the lazy default follows the setting
    return chosen


def start_worker(log_dir: Path, name: str, queue: str, **env: str):  # type: ignore[no-untyped-def]
    """A real Celery worker process (solo pool) on its own queue, with extra settings in its environment."""
    from tests.conftest import BIN_DIR, start_process, subprocess_env

    return start_process(
        [str(BIN_DIR / "celery"), "-A", "saas", "worker", "--pool", "solo", "--without-gossip", "--without-mingle",
         "--loglevel", "INFO", "--hostname", f"{name}-{queue}@%h", "--queues", queue],
        log_dir / f"{name}.log", subprocess_env(**env),
    )  # fmt: skip


@pytest.fixture
def own_queue():
    """Tasks sent by this test go to a queue that only this test's workers consume."""
    from saas.celery import app

    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue = f"crewdesk-storage-{uuid.uuid4().hex[:8]}"
    yield queue
    app.conf.task_default_queue = previous


@pytest.fixture
def org(db):
    from tests.accounts.factories import OrganizationFactory

    return OrganizationFactory()


@pytest.fixture
def writer(org):
    from tests.accounts.conftest import issue_key, key_client

    return key_client(issue_key(org, scopes=["read", "ask", "documents:write"]).secret)
