"""The cyclic garbage collector set for how the probe allocates.

Once the modules a command runs are loaded, what they allocated (modules, classes,
functions, the config) lives as long as the process: `gc.freeze` puts it out of the
collector's sight. The engine then allocates many small objects per packet and
message (SIP messages, dialogs, snapshots, records) and frees nearly all of them by
reference count, so collections of the young generation find almost nothing: with
CPython's default threshold (700) they ran every few messages and cost a quarter of
the CPU on SIP traffic. With a young threshold of 50,000 the output is the same and
the peak RSS too (bench/flood_tables.py: clean signalling ~25 % and an INVITE flood
~20 % less CPU, RSS unchanged). `voipprobe analyze`, the agent (`voipprobe run`) and
the benchmarks that time the engine use it.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze what is allocated so far and collect cyclic garbage less often."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
