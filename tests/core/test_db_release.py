"""saas/core/db.py: connections go back to the pool before slow waits, never out of an open transaction."""

import pytest
from django.core import checks
from django.db import connection, connections, transaction

from saas.core.checks import no_atomic_requests
from saas.core.db import release_connections


@pytest.mark.django_db(transaction=True)
def test_an_idle_connection_is_given_back_and_the_next_query_takes_one_again():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert connection.connection is not None
    assert release_connections() == 1
    assert connection.connection is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT 2")
        assert cursor.fetchone() == (2,)


@pytest.mark.django_db(transaction=True)
def test_a_connection_in_a_transaction_is_kept():
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert release_connections() == 0
        assert connection.connection is not None and not connection.needs_rollback
        with connection.cursor() as cursor:
            cursor.execute("SELECT 3")
            assert cursor.fetchone() == (3,)


def test_atomic_requests_is_refused_at_startup(monkeypatch):
    assert no_atomic_requests(None) == []
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)
    assert [e.id for e in no_atomic_requests(None)] == ["crewdesk.E002"]
    assert no_atomic_requests in checks.registry.registry.registered_checks
