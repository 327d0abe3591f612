"""The API tells the truth: schemathesis generates requests from the OpenAPI schema the app serves and sends
them to a real daphne with an org admin's API key holding every scope. Every answer must be a non-5xx, with
a status code, content type and body the schema declares, and requests that break the schema must be
refused (negative data rejection).

Bounded and repeatable: a fixed seed, deterministic generation, a few examples per operation, one worker.
The examples, coverage (boundary values and invalid inputs derived from the schema) and fuzzing phases run;
the stateful phase is left out (it chains responses into requests and could reach the key's own id).

Excluded: revoking, rotating and deleting an API key (schemathesis reuses ids it saw in responses, so it
finds the fuzzer's own key in GET /keys and revokes it; tests/accounts/test_api_keys.py covers these three).
Everything else runs: an API key never holds the owner's permission, so deleting the org or the account and
transferring ownership answer 403 to it (and that 403 must be in the schema). The key is checked to still
work at the end.
"""

import os
import subprocess
from collections.abc import Iterator

import pytest
import requests
from django.conf import settings

from accounts import permissions
from accounts.models import ApiKey, Membership
from saas.llm.models import ModelConfig
from saas.llm.registry import sync_registry
from tests.accounts.conftest import issue_key
from tests.accounts.factories import MembershipFactory, OrganizationFactory
from tests.conftest import BIN_DIR, LiveServer, running_daphne

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

EXAMPLES_PER_OPERATION = 10
SEED = 14
# Would revoke the fuzzer's own key (see the module's docstring).
EXCLUDED = ["api_v1_keys_destroy", "api_v1_keys_revoke_create", "api_v1_keys_rotate_create"]
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
]


@pytest.fixture(scope="module")
def fuzz_server(django_db_setup, tmp_path_factory, fake_server) -> Iterator[LiveServer]:
    """A daphne of its own: the fuzzer sends more requests a minute than the default rate limits allow."""
    with running_daphne(
        tmp_path_factory.mktemp("fuzz"),
        fake_server,
        RATE_LIMIT_API_KEY="1000000/minute",
        RATE_LIMIT_ORG="1000000/minute",
        RATE_LIMIT_USER="1000000/minute",
        **{
            f"RATE_LIMIT_{endpoint.upper()}_{per}": "1000000/minute"
            for endpoint in settings.ENDPOINT_RATE_LIMITS
            for per in ("ORG", "KEY")
        },
    ) as server:
        yield server


def test_every_operation_keeps_to_the_schema(fuzz_server, tmp_path):
    sync_registry(ModelConfig)  # the registry's models (a transactional test starts from an empty database)
    org = OrganizationFactory()
    MembershipFactory(organization=org, role=Membership.Role.OWNER)
    issued = issue_key(org, scopes=sorted(permissions.KEY_SCOPES), name="fuzzer")
    auth = f"Bearer {issued.secret}"

    # The first search loads the local embedding model into the server (tens of seconds on a busy machine):
    # before the run, so that no fuzzed request waits for it.
    warm_up = requests.post(f"{fuzz_server.url}/api/v1/search", json={"query": "warm up"},
                            headers={"Authorization": auth}, timeout=600)  # fmt: skip
    assert warm_up.status_code == 200, warm_up.text
    config = tmp_path / "schemathesis.toml"
    config.write_text("[cache]\nenabled = false\n")  # nothing replayed from an earlier run, nothing written here

    result = subprocess.run(
        [
            str(BIN_DIR / "st"), "--config-file", str(config), "run", f"{fuzz_server.url}/api/schema/?format=json",
            "--url", fuzz_server.url,
            "--header", f"Authorization: {auth}",
            "--checks", ",".join(CHECKS),
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(EXAMPLES_PER_OPERATION),
            "--seed", str(SEED),
            "--generation-deterministic",
            "--workers", "1",
            "--request-timeout", "120",
            "--continue-on-failure",
            *(arg for operation in EXCLUDED for arg in ("--exclude-operation-id", operation)),
            "--no-color",
            "--output-truncate", "false",
            "--output-sanitize", "true",
        ],
        cwd=tmp_path,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    report = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(report)
    assert result.returncode == 0, report[-20000:]
    assert "operations" in report.lower()

    # The run never revoked or rotated the key it used.
    key = ApiKey.all_orgs.get(pk=issued.api_key.pk)
    assert key.revoked_at is None
    response = requests.get(f"{fuzz_server.url}/api/v1/me", headers={"Authorization": auth}, timeout=30)
    assert response.status_code == 200


def test_a_malformed_multipart_body_gets_the_error_shape_from_django_not_an_empty_400(fuzz_server):
    """Twisted (under daphne) used to parse multipart bodies itself and answer a malformed one with an empty
    400 before Django saw it (schemathesis found it on POST /api/v1/documents)."""
    org = OrganizationFactory()
    issued = issue_key(org, scopes=["read", "documents:write"], name="uploader")
    response = requests.post(
        f"{fuzz_server.url}/api/v1/documents",
        data=b"--c637e12e2b1a998d80d1b087531af51c--\r\n",
        headers={
            "Authorization": f"Bearer {issued.secret}",
            "Content-Type": "multipart/form-data; boundary=c637e12e2b1a998d80d1b087531af51c",
        },
        timeout=30,
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] in ("invalid", "malformed_request")
