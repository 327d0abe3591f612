"""File storage (saas/core/storage.py): STORAGE_URL picks the backend; every file is encrypted by us on top.

    STORAGE_URL=                                   local disk under MEDIA_ROOT (the default)
    STORAGE_URL=file:///var/lib/crewdesk/media     local disk there
    STORAGE_URL=s3://bucket[/prefix]?region=eu-west-1[&endpoint_url=https://minio:9000][&sse=AES256]

S3 credentials: `s3://KEY_ID:SECRET@bucket` (percent-encoded) when given, else boto3's usual chain
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, a profile, the pod's or instance's role).
Options: region, endpoint_url (MinIO, R2, GCS's S3 mode), addressing_style (path | virtual | auto),
sse (server-side encryption: AES256, the default | aws:kms | none for a MinIO without a KMS), kms_key_id (with
aws:kms), verify=false (do not check the endpoint's TLS certificate). Anything else stops the boot."""

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

S3_OPTIONS = {"region", "endpoint_url", "addressing_style", "sse", "kms_key_id", "verify"}
LOCAL = "saas.core.storage.EncryptedFileSystemStorage"
S3 = "saas.core.storage_s3.EncryptedS3Storage"


class StorageUrlError(ValueError):
    pass


def storage_from_url(url: str, *, media_root: str) -> dict[str, Any]:
    """The STORAGES["default"] entry for STORAGE_URL (an empty URL is local disk under `media_root`)."""
    url = url.strip()
    if not url:
        return {"BACKEND": LOCAL, "OPTIONS": {"location": media_root}}
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise StorageUrlError("STORAGE_URL file:// takes an absolute path: file:///var/lib/crewdesk/media")
        return {"BACKEND": LOCAL, "OPTIONS": {"location": unquote(parts.path)}}
    if parts.scheme != "s3":
        raise StorageUrlError(f"STORAGE_URL must start with s3:// or file://, not {parts.scheme or url!r}.")
    if not parts.hostname:
        raise StorageUrlError("STORAGE_URL names no bucket: s3://bucket?region=...")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - S3_OPTIONS)
    if unknown:
        raise StorageUrlError(f"STORAGE_URL has unknown options {unknown}; known: {sorted(S3_OPTIONS)}.")
    sse = query.get("sse", "AES256")
    if sse not in ("AES256", "aws:kms", "none"):
        raise StorageUrlError("STORAGE_URL sse must be AES256, aws:kms or none.")
    parameters = {} if sse == "none" else {"ServerSideEncryption": sse}
    if query.get("kms_key_id"):
        if sse != "aws:kms":
            raise StorageUrlError("STORAGE_URL kms_key_id goes with sse=aws:kms.")
        parameters["SSEKMSKeyId"] = query["kms_key_id"]
    if query.get("addressing_style", "auto") not in ("path", "virtual", "auto"):
        raise StorageUrlError("STORAGE_URL addressing_style must be path, virtual or auto.")
    options: dict[str, Any] = {
        "bucket_name": parts.hostname,
        "location": unquote(parts.path).strip("/"),
        "region_name": query.get("region") or None,
        "endpoint_url": query.get("endpoint_url") or None,
        "addressing_style": query.get("addressing_style") or None,
        "object_parameters": parameters,
        "file_overwrite": True,  # names are ids, never a user's; a key rotation replaces an object whole
        "default_acl": None,  # the bucket's own policy (private) applies
    }
    if query.get("verify", "").lower() in ("false", "0", "no"):
        options["verify"] = False
    if parts.username:
        options["access_key"] = unquote(parts.username)
        options["secret_key"] = unquote(parts.password or "")
    return {"BACKEND": S3, "OPTIONS": options}
