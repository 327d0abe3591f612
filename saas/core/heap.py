"""The garbage collector set up for a long-running server process, once its application is loaded.

A web process holds about 440,000 objects once Django, the apps and their libraries are imported, and CPython's
cyclic collector walks all of them at every full collection (about 0.3 s on this machine, with the event loop
stopped: every open stream and every waiting request stalls meanwhile). Those objects live as long as the
process, so they are moved out of the collector's sight (`gc.freeze`, as CPython's documentation suggests for
servers); full collections then walk only what the process made since. That is still a lot with 500 chats open
in a process (each socket's consumer, protocol and tasks): full collections of 70-270 ms each, about four in
the 46 s of `bench/streams.py`'s websocket ramp, were its slowest first tokens. Young collections therefore run
once GC_GEN0_THRESHOLD (50,000) container objects were allocated instead of CPython's 700; a full collection
comes after a number of young ones, so it also comes that much more rarely (one in the same ramp). The garbage
waiting for a young collection is a few MB at most.
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
