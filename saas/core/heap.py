"""The garbage collector set up for a long-running server process, once its application is loaded.

A web process holds about 440,000 objects once Django, the apps and their libraries are imported, and CPython's
cyclic collector walks all of them at every full collection (about 0.3 s on this machine, with the event loop
stopped: every open stream and every waiting request stalls meanwhile). Those objects live as long as the
process, so they are moved out of the collector's sight (`gc.freeze`, as CPython's documentation suggests for
servers); full collections then walk only what the process made since. Young collections run once
GC_GEN0_THRESHOLD container objects were allocated instead of CPython's 700: a request allocates a few
thousand, so the default ran a collection (and promoted each request's live objects) several times per request.
"""

import gc

from django.conf import settings


def settle() -> None:
    """Freeze what is alive now and set the young generation's threshold (GC_FREEZE, GC_GEN0_THRESHOLD)."""
    if settings.GC_FREEZE:
        gc.collect()  # the import-time garbage first, so it is not frozen with the rest
        gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(settings.GC_GEN0_THRESHOLD, gen1, gen2)
