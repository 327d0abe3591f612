"""Retention: each store that keeps customer content for a limited time registers how to purge what is older
than a cutoff, under the org setting that says how many days to keep it (an `Organization` field; empty: keep
until deleted). `accounts.services.retention_purge` (a beat task) runs them in batches.

Registered at startup by the layer that owns the data, so the purge can reach every store without this layer or
accounts importing the ones above them."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Purger:
    store: str  # what a person reads: "conversations", "ledger content"
    setting: str  # the Organization field with the days to keep
    purge: Callable[..., int]  # (*, org_id, older_than: datetime, batch_size: int) -> rows purged in one batch


purgers: list[Purger] = []


def register_purger(*, store: str, setting: str, purge: Callable[..., int]) -> None:
    purgers.append(Purger(store, setting, purge))


def purge_batches(purger: Purger, *, org_id: Any, older_than: datetime, batch_size: int) -> int:
    """Purge in batches (each its own transaction in the purger) until a batch comes back short."""
    total = 0
    while True:
        purged = purger.purge(org_id=org_id, older_than=older_than, batch_size=batch_size)
        total += purged
        if purged < batch_size:
            return total
