"""Files at rest: encrypted by us on local disk and on S3 (plus the bucket's server-side encryption), read back
as streams, refused clearly when missing or damaged, and moved to a new key by the rotation command."""

import io
import os

import pytest
from cryptography.fernet import Fernet
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from saas.core import encrypted_storage as sealed
from saas.core import storage

SENTENCE = b"Refunds take thirty days from the purchase date."
SIZES = [0, 1, sealed.SEGMENT - 1, sealed.SEGMENT, sealed.SEGMENT + 1, 3 * sealed.SEGMENT + 5]


def _content(size: int) -> bytes:
    data = (SENTENCE * (size // len(SENTENCE) + 1))[:size]
    return data


@pytest.mark.parametrize("size", SIZES)
def test_what_is_written_reads_back_and_is_not_stored_in_clear(backend, size):
    data = _content(size)
    name = default_storage.save(f"check/{size}.bin", ContentFile(data))
    stored = backend.raw(name)
    assert stored.startswith(sealed.MAGIC)
    assert (SENTENCE not in stored) if size >= len(SENTENCE) else True
    assert len(stored) > len(data)
    with default_storage.open(name) as handle:
        assert handle.read() == data
    with default_storage.open(name) as handle:  # read in small pieces, as a response streams it
        assert b"".join(iter(lambda: handle.read(1000), b"")) == data
    assert default_storage.size(name) == size


def test_s3_objects_also_ask_for_server_side_encryption(backend):
    if backend.kind != "s3":
        pytest.skip("server-side encryption is S3's")
    name = default_storage.save("check/sse.bin", ContentFile(SENTENCE))
    head = backend.head(name)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/octet-stream"  # ciphertext, whatever the name says


def test_two_files_of_the_same_content_do_not_look_alike(backend):
    first = default_storage.save("check/a.bin", ContentFile(SENTENCE * 10))
    second = default_storage.save("check/b.bin", ContentFile(SENTENCE * 10))
    assert backend.raw(first)[200:] != backend.raw(second)[200:]  # a data key of its own for each file


def test_a_missing_file_is_a_clear_error(backend):
    with pytest.raises(storage.StoredFileMissing) as missing:
        default_storage.open("check/never-written.bin")
    assert missing.value.status == 404 and missing.value.code == "file_missing"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[:200] + bytes([raw[200] ^ 1]) + raw[201:], id="a flipped bit"),
        pytest.param(lambda raw: raw[: len(raw) // 2], id="cut in the middle"),
        pytest.param(lambda raw: b"garbage" * 40, id="replaced"),
        pytest.param(lambda raw: raw[:40] + (b"A" if raw[40:41] != b"A" else b"B") + raw[41:], id="a damaged key"),
    ],
)
def test_a_damaged_file_is_a_clear_error_not_altered_bytes(backend, damage, settings):
    settings.STORAGE_ALLOW_UNENCRYPTED = False  # once migrated: a file swapped for one in clear is tampering too
    name = default_storage.save("check/damaged.bin", ContentFile(SENTENCE * 20))
    backend.put_raw(name, damage(backend.raw(name)))
    with pytest.raises(storage.StoredFileCorrupt) as corrupt, default_storage.open(name) as handle:
        handle.read()
    assert corrupt.value.status == 409 and corrupt.value.code == "file_corrupt"


def test_a_file_cut_at_a_segment_boundary_or_with_a_segment_dropped_is_refused(backend):
    data = os.urandom(3 * sealed.SEGMENT)
    name = default_storage.save("check/segments.bin", ContentFile(data))
    raw = backend.raw(name)
    head = len(raw) - 3 * (sealed.SEGMENT + sealed.TAG)
    seg = sealed.SEGMENT + sealed.TAG
    for damaged in (raw[: head + 2 * seg], raw[:head] + raw[head + seg :]):
        backend.put_raw(name, damaged)
        with pytest.raises(storage.StoredFileCorrupt), default_storage.open(name) as handle:
            handle.read()


def test_a_damaged_later_segment_fails_the_read_that_reaches_it(backend):
    data = os.urandom(3 * sealed.SEGMENT)
    name = default_storage.save("check/late.bin", ContentFile(data))
    raw = bytearray(backend.raw(name))
    raw[-10] ^= 1  # in the last segment
    backend.put_raw(name, bytes(raw))
    handle = default_storage.open(name)  # the header and the first segment are fine
    assert handle.read(sealed.SEGMENT) == data[: sealed.SEGMENT]
    with pytest.raises(storage.StoredFileCorrupt):
        handle.read()
    handle.close()


def test_a_file_stored_before_encryption_is_read_then_encrypted_by_the_rotation(backend):
    name = "check/legacy.txt"
    backend.put_raw(name, SENTENCE)
    with default_storage.open(name) as handle:
        assert handle.read() == SENTENCE
    assert default_storage.rotate_file(name, check=True) == "rotated"
    assert backend.raw(name) == SENTENCE  # check changes nothing
    assert default_storage.rotate_file(name) == "rotated"
    assert SENTENCE not in backend.raw(name) and backend.raw(name).startswith(sealed.MAGIC)
    with default_storage.open(name) as handle:
        assert handle.read() == SENTENCE
    assert default_storage.rotate_file(name) == "current"


def test_once_migrated_a_file_in_clear_is_refused(backend, settings):
    settings.STORAGE_ALLOW_UNENCRYPTED = False
    backend.put_raw("check/swapped.txt", SENTENCE)
    with pytest.raises(storage.StoredFileCorrupt) as refused:
        default_storage.open("check/swapped.txt")
    assert "not encrypted" in refused.value.message


def test_rotation_rewraps_the_key_and_the_old_key_can_go(backend, settings):
    old = Fernet.generate_key().decode()
    settings.LLM_ENCRYPTION_KEYS = [old]
    data = os.urandom(2 * sealed.SEGMENT + 7)
    name = default_storage.save("check/rotate.bin", ContentFile(data))
    before = backend.raw(name)
    new = Fernet.generate_key().decode()
    settings.LLM_ENCRYPTION_KEYS = [new, old]
    assert default_storage.rotate_file(name) == "rotated"
    after = backend.raw(name)
    assert after[: len(sealed.MAGIC)] == sealed.MAGIC and after[-100:] == before[-100:]  # segments copied as they are
    assert after != before
    settings.LLM_ENCRYPTION_KEYS = [new]
    with default_storage.open(name) as handle:
        assert handle.read() == data
    settings.LLM_ENCRYPTION_KEYS = [old]  # the old key alone no longer opens it
    with pytest.raises(storage.StoredFileCorrupt):
        default_storage.open(name)


@pytest.mark.django_db
def test_the_rotation_command_reaches_stored_files(backend, settings):
    from documents import services
    from documents.models import Document
    from tests.accounts.factories import OrganizationFactory

    old = Fernet.generate_key().decode()
    settings.LLM_ENCRYPTION_KEYS = [old]

    org = OrganizationFactory()
    document = services.document_upload(org=org, data=b"# Notes\n\n" + SENTENCE, filename="notes.md")
    settings.LLM_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old]
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("rotate_encryption_keys", "--check", stdout=out)
    assert "documents.Document.file (files): 1 not under the newest key, 0 under it" in out.getvalue()
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "documents.Document.file (files): 1 re-encrypted, 0 already under the newest key\n" in out.getvalue()
    out = io.StringIO()
    call_command("rotate_encryption_keys", "--check", stdout=out)
    assert "documents.Document.file (files): 0 not under the newest key, 1 under it" in out.getvalue()
    settings.LLM_ENCRYPTION_KEYS = settings.LLM_ENCRYPTION_KEYS[:1]
    stored = Document.all_orgs.get(pk=document.pk)
    with stored.file.open("rb") as handle:
        assert SENTENCE in handle.read()
