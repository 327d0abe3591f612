"""STORAGE_URL: what each form means, and a wrong one stops the boot with one line."""

import pytest

from saas.settings.storage import LOCAL, S3, StorageUrlError, storage_from_url
from tests.conftest import run_python, subprocess_env


def test_empty_is_local_disk_under_media_root():
    assert storage_from_url("", media_root="/m") == {"BACKEND": LOCAL, "OPTIONS": {"location": "/m"}}
    assert storage_from_url("file:///var/lib/crewdesk/media", media_root="/m")["OPTIONS"] == {
        "location": "/var/lib/crewdesk/media"
    }


def test_s3_with_every_option():
    config = storage_from_url(
        "s3://AKIA%2FX:se%2Bcret@my-bucket/tenant/files?region=eu-west-1&endpoint_url=http://minio:9000"
        "&addressing_style=path&sse=aws:kms&kms_key_id=alias/crewdesk&verify=false",
        media_root="/m",
    )
    assert config["BACKEND"] == S3
    options = config["OPTIONS"]
    assert options["bucket_name"] == "my-bucket" and options["location"] == "tenant/files"
    assert options["region_name"] == "eu-west-1" and options["endpoint_url"] == "http://minio:9000"
    assert options["addressing_style"] == "path" and options["verify"] is False
    assert options["object_parameters"] == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/crewdesk"}
    assert (options["access_key"], options["secret_key"]) == ("AKIA/X", "se+cret")


def test_s3_defaults_server_side_encryption_and_the_aws_credential_chain():
    options = storage_from_url("s3://bucket", media_root="/m")["OPTIONS"]
    assert options["object_parameters"] == {"ServerSideEncryption": "AES256"}
    assert "access_key" not in options and options["location"] == ""
    assert storage_from_url("s3://bucket?sse=none", media_root="/m")["OPTIONS"]["object_parameters"] == {}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "must start with s3:// or file://"),
        ("s3://", "names no bucket"),
        ("s3://b?regoin=eu", "unknown options ['regoin']"),
        ("s3://b?sse=des", "sse must be"),
        ("s3://b?kms_key_id=k", "kms_key_id goes with sse=aws:kms"),
        ("s3://b?addressing_style=odd", "addressing_style must be"),
        ("file://relative/path", "absolute path"),
    ],
)
def test_a_wrong_url_is_refused_with_what_to_write(url, message):
    with pytest.raises(StorageUrlError, match=message.replace("[", r"\[").replace("]", r"\]")):
        storage_from_url(url, media_root="/m")


@pytest.mark.django_db
def test_the_boot_stops_with_one_line_on_a_wrong_url():
    result = run_python("import django; django.setup()", subprocess_env(STORAGE_URL="s3://b?nope=1"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Crewdesk refuses to start: STORAGE_URL has unknown")
