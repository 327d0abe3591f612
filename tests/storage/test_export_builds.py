"""An export is built once: a second delivery of the build task while the first is still building does nothing
(two builds used to write two files, and the one the row no longer named stayed on the storage for ever)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts import exports
from accounts.models import DataExport
from tests.accounts.factories import MembershipFactory


@pytest.mark.django_db
def test_a_second_build_while_one_is_building_writes_nothing(backend):
    member = MembershipFactory()
    export = exports.export_request(user=member.user)
    DataExport.objects.filter(pk=export.pk).update(status=DataExport.Status.BUILDING, updated_at=timezone.now())
    assert exports.export_build(export_id=export.pk) is None  # the first build is alive: left to it
    export.refresh_from_db()
    assert export.status == DataExport.Status.BUILDING and not export.file


@pytest.mark.django_db
def test_a_build_whose_worker_died_is_taken_over(backend):
    member = MembershipFactory()
    export = exports.export_request(user=member.user)
    lost = timezone.now() - timedelta(seconds=exports.EXPORT_BUILD_STALE_AFTER + 60)
    DataExport.objects.filter(pk=export.pk).update(status=DataExport.Status.BUILDING, updated_at=lost)
    built = exports.export_build(export_id=export.pk)
    assert built is not None and built.status == DataExport.Status.READY
    assert backend.exists(built.file.name)
    assert exports.export_build(export_id=export.pk) is None  # built is built
