"""Where files live (uploaded originals, data exports): Django's storage API, with the backend chosen by
STORAGE_URL (saas/settings/storage.py: local disk by default, or S3 in saas/core/storage_s3.py).

Every file is encrypted by us before it leaves the process (saas/core/encrypted_storage.py: a data key per
file, wrapped with LLM_ENCRYPTION_KEYS), on local disk and on S3 alike; on S3 the bucket's server-side
encryption is asked for as well. Ours is kept on S3 because server-side encryption only protects the
provider's disks: whoever can read the bucket (a leaked or over-broad credential, a copied backup, the operator
of a MinIO or R2 account) reads its files in clear. With ours they are as unreadable without the app's keys as
the text columns in PostgreSQL, and the key rotation command reaches them.

Reading streams: neither an S3 object nor a decrypted file is ever held whole in memory here. A missing file
is StoredFileMissing (404), an unreadable one StoredFileCorrupt (409), an unreachable store
StorageUnavailable (503): each an error in the one JSON shape, never a 500."""

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage
from django.http import FileResponse

from saas.core import crypto
from saas.core import encrypted_storage as sealed
from saas.core.errors import ApplicationError, ServiceUnavailable

logger = logging.getLogger(__name__)

# --- Errors ------------------------------------------------------------------------------------------------


class StoredFileMissing(ApplicationError):
    status = 404
    code = "file_missing"


class StoredFileCorrupt(ApplicationError):
    status = 409
    code = "file_corrupt"


class StorageUnavailable(ServiceUnavailable):
    code = "storage_unavailable"


def missing(name: str) -> StoredFileMissing:
    logger.error("stored file missing: %s", name)
    return StoredFileMissing("The stored file is missing from the file storage: it cannot be read.")


def _corrupt(name: str, why: Exception) -> StoredFileCorrupt:
    logger.error("stored file unreadable: %s (%s)", name, why)
    return StoredFileCorrupt(f"The stored file cannot be read: {why}.")


# --- The encrypted backends --------------------------------------------------------------------------------


class EncryptedStorageMixin(Storage):
    """Writes seal the content (saas/core/encrypted_storage.py) as it streams to the backend; `open()` gives
    a stream of the content, checked as it is read. A backend says how to read its stored bytes (`_open_raw`,
    as a stream) and how to replace a stored file whole (`_replace_raw`)."""

    def _open_raw(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def _replace_raw(self, name: str, stream: BinaryIO) -> None:
        raise NotImplementedError

    def _raw_size(self, name: str) -> int:
        return int(super().size(name))

    def _open(self, name: str, mode: str = "rb") -> File:
        if set(mode) - set("rb"):
            raise ValueError("Stored files are written with save(), not opened for writing.")
        raw = self._open_raw(name)
        try:
            stream = sealed.DecryptingStream(raw, allow_clear=settings.STORAGE_ALLOW_UNENCRYPTED)
        except sealed.CorruptFile as exc:
            raw.close()
            raise _corrupt(name, exc) from exc
        return File(_Checked(stream, name), name=name)  # type: ignore[arg-type]

    def _save(self, name: str, content: Any) -> str:
        if hasattr(content, "seek") and (not hasattr(content, "seekable") or content.seekable()):
            content.seek(0)
        sealed_content = File(io_buffered(sealed.EncryptingStream(content)), name=name)
        return str(super()._save(name, sealed_content))  # type: ignore[misc]

    def size(self, name: str) -> int:
        raw = self._open_raw(name)
        try:
            token, _ = sealed.read_header(raw.read)
        except sealed.CorruptFile as exc:
            raise _corrupt(name, exc) from exc
        finally:
            raw.close()
        stored = self._raw_size(name)
        return stored if token is None else sealed.plaintext_size(stored, sealed.PREFIX + len(token))

    def rotate_file(self, name: str, *, check: bool = False) -> str:
        """Puts a stored file's key under the newest of LLM_ENCRYPTION_KEYS (and encrypts a file stored in
        clear): "rotated", "current" (nothing to do), or "missing". With check, only says which."""
        raw = self._open_raw_or_none(name)
        if raw is None:
            return "missing"
        try:
            token, start = sealed.read_header(raw.read)
            if token is not None and crypto.is_current(token.decode("ascii")):
                return "current"
            if check:
                return "rotated"
            if token is None:  # stored before encryption: the whole content is encrypted now
                stream: Any = sealed.EncryptingStream(_Prepended(start, raw))
            else:
                try:
                    stream = sealed.RewrappedStream(raw, token)
                except ValueError as exc:
                    raise _corrupt(name, exc) from exc
            self._replace_raw(name, io_buffered(stream))
            return "rotated"
        finally:
            raw.close()

    def _open_raw_or_none(self, name: str) -> BinaryIO | None:
        try:
            return self._open_raw(name)
        except StoredFileMissing:
            return None


class EncryptedFileSystemStorage(EncryptedStorageMixin, FileSystemStorage):
    def _open_raw(self, name: str) -> BinaryIO:
        try:
            return open(self.path(name), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise missing(name) from exc

    def _raw_size(self, name: str) -> int:
        return os.path.getsize(self.path(name))

    def _replace_raw(self, name: str, stream: BinaryIO) -> None:
        """Written beside it, then renamed over it: a reader sees the old file or the new one, never half."""
        target = Path(self.path(name))
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".rotate-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(sealed.SEGMENT):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if self.file_permissions_mode is not None:
                os.chmod(temporary, self.file_permissions_mode)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


# --- Streams -----------------------------------------------------------------------------------------------


def io_buffered(stream: Any) -> BinaryIO:
    return io.BufferedReader(stream, buffer_size=sealed.SEGMENT)  # type: ignore[return-value]


class _Prepended:
    """`start` then the rest of `raw` (a file stored in clear whose first bytes were read to look for MAGIC)."""

    def __init__(self, start: bytes, raw: BinaryIO) -> None:
        self._start, self._raw = start, raw

    def read(self, size: int = -1) -> bytes:
        if self._start:
            part, self._start = (self._start, b"") if size < 0 or size >= len(self._start) else (
                self._start[:size], self._start[size:])  # fmt: skip
            return part
        return self._raw.read(size)


class _Checked:
    """A decrypted stream whose failures are our errors: a damaged segment met while reading is a
    StoredFileCorrupt (logged with the file's name), not a bare cryptography exception."""

    def __init__(self, stream: sealed.DecryptingStream, name: str) -> None:
        self._stream, self._name = stream, name

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)  # type: ignore[no-any-return]
        except sealed.CorruptFile as exc:
            raise _corrupt(self._name, exc) from exc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._stream.close()

    @property
    def closed(self) -> bool:
        return bool(self._stream.closed)

    def __iter__(self) -> Any:
        return iter(lambda: self.read(sealed.SEGMENT), b"")


def download_response(handle: Any, *, filename: str, size: int | None, content_type: str = "") -> FileResponse:
    """A stored file, opened with `storage.open()` (so a missing or unreadable one was already an error in the
    one JSON shape), streamed as an attachment. The length is the content's, which the caller knows (what is
    stored is longer). A segment found damaged midway ends the response early: the client sees a download
    shorter than its Content-Length, never altered bytes."""
    response = FileResponse(handle, as_attachment=True, filename=filename, content_type=content_type or None)
    if size is not None:
        response["Content-Length"] = str(size)
    return response


# --- Key rotation ------------------------------------------------------------------------------------------


def stored_file_fields() -> list[tuple[Any, str]]:
    """(model, field name) of every FileField whose files are encrypted by us (every one, by default)."""
    from django.apps import apps
    from django.db import models

    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, models.FileField) and isinstance(field.storage, EncryptedStorageMixin)
    ]


def rotate_stored_files(*, model: Any, field: str, check: bool, batch_size: int) -> dict[str, int]:
    """Every stored file of one FileField put under the newest key (the data key re-wrapped, the content
    copied as it is; a file stored in clear is encrypted). Counts of "rotated" (with check: to rotate),
    "current", "missing" and "unreadable"."""
    counts = {"rotated": 0, "current": 0, "missing": 0, "unreadable": 0}
    storage = model._meta.get_field(field).storage
    rows = model._base_manager.exclude(**{field: ""}).order_by("pk").values_list(field, flat=True)
    for name in rows.iterator(chunk_size=batch_size):
        try:
            counts[storage.rotate_file(name, check=check)] += 1
        except StoredFileCorrupt:
            counts["unreadable"] += 1  # logged: damaged, or no listed key opens it
    return counts
