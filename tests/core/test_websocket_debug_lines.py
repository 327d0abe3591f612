"""autobahn's per-connection debug line of its settings is made only when written (saas/core/http_server.py):
the text is the same, and the other user of its pformat (the timings table) still gets a string."""

from pprint import pformat

from autobahn.websocket import protocol

from saas.core import http_server


def test_the_settings_line_is_formatted_only_when_written(monkeypatch):
    monkeypatch.setattr(protocol, "pformat", pformat)
    monkeypatch.setattr(protocol.Timings, "__str__", protocol.Timings.__str__)
    settings = [("openHandshakeTimeout", 5, "WebSocketServerFactory"), ("autoPingInterval", 20, "Factory")]

    http_server._websocket_debug_lines_made_when_written()

    deferred = protocol.pformat(settings)
    assert not isinstance(deferred, str)  # nothing formatted yet
    assert "{attrs}".format(attrs=deferred) == pformat(settings)  # noqa: UP032  (as the logger formats it)
    timings = protocol.Timings()
    timings.track("opened")
    assert isinstance(str(timings), str) and "opened" in str(timings)
