"""The S3 backend of saas/core/storage.py (AWS S3, MinIO, R2, GCS's S3 mode): django-storages' S3Storage with
our encryption on top, reading objects as streams from the socket."""

import logging
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from saas.core.storage import EncryptedStorageMixin, StorageUnavailable, missing

logger = logging.getLogger(__name__)
FAILURES = (ClientError, BotoCoreError)


def _failure(name: str, exc: Exception, doing: str) -> Exception:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404 or exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return missing(name)
    logger.error("file storage unavailable %s %s: %s", doing, name, exc)
    return StorageUnavailable("The file storage cannot be reached for a moment. Try again shortly.")


class EncryptedS3Storage(EncryptedStorageMixin, S3Storage):  # type: ignore[misc]
    def _key(self, name: str) -> str:
        return str(self._normalize_name(clean_name(name)))

    def _open_raw(self, name: str) -> BinaryIO:
        """The object's body as a stream from the socket (django-storages' S3File would first download it
        whole into a spooled buffer, in memory by default)."""
        try:
            response = self.connection.meta.client.get_object(Bucket=self.bucket_name, Key=self._key(name))
        except FAILURES as exc:
            raise _failure(name, exc, "reading") from exc
        return response["Body"]  # type: ignore[no-any-return]

    def _raw_size(self, name: str) -> int:
        try:
            head = self.connection.meta.client.head_object(Bucket=self.bucket_name, Key=self._key(name))
        except FAILURES as exc:
            raise _failure(name, exc, "reading") from exc
        return int(head["ContentLength"])

    def _save(self, name: str, content: Any) -> str:
        try:
            return super()._save(name, content)
        except FAILURES as exc:
            raise _failure(name, exc, "writing") from exc

    def delete(self, name: str) -> None:
        try:
            super().delete(name)
        except FAILURES as exc:
            raise _failure(name, exc, "deleting") from exc

    def _replace_raw(self, name: str, stream: BinaryIO) -> None:
        """One PUT (multipart when large) replaces the object whole: a reader never sees half of it."""
        key = self._key(name)
        try:
            self.bucket.Object(key).upload_fileobj(
                stream, ExtraArgs=self._get_write_parameters(key), Config=self.transfer_config
            )
        except FAILURES as exc:
            raise _failure(name, exc, "writing") from exc

    def get_object_parameters(self, name: str) -> dict[str, Any]:
        # What is stored is ciphertext, whatever the name says.
        return {**self.object_parameters, "ContentType": "application/octet-stream"}
