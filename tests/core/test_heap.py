"""The web servers' garbage collector (saas/core/heap.py): the loaded application frozen out of full
collections, the young generation's threshold from the settings."""

import gc

import pytest

from saas.core import heap


@pytest.fixture
def collector():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_what_is_loaded_is_frozen_and_the_threshold_set(collector, settings):
    settings.GC_FREEZE, settings.GC_GEN0_THRESHOLD = True, 5000
    gc.unfreeze()
    heap.settle()
    assert gc.get_freeze_count() > 10_000  # Django and the apps, at least
    assert gc.get_threshold()[0] == 5000
    gc.collect()
    assert gc.get_freeze_count() > 10_000  # a full collection leaves them frozen


def test_the_freeze_can_be_turned_off(collector, settings):
    settings.GC_FREEZE, settings.GC_GEN0_THRESHOLD = False, 700
    gc.unfreeze()
    heap.settle()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] == 700
