"""`RtpColumns`: the lone-row form a candidate of one packet is held in."""

from __future__ import annotations

import numpy as np

from agent.rtp.columns import RtpColumns


def test_rows_and_of_row_round_trip_values_and_dtypes() -> None:
    cols = RtpColumns.build([-1, -1], [1.5, 2.25], [65535, 3], [(1 << 32) - 1, 7], [8, 101],
                            [True, False], [0, 4], [46, 0], [-1, 12], [-1, 5])
    rows = cols.rows(np.arange(2))
    assert rows[0] == (-1, 1.5, 65535, (1 << 32) - 1, 8, True, 0, 46, -1, -1)
    back = RtpColumns.concat([RtpColumns.of_row(r) for r in rows])
    for name in ("sid", "arrival_s", "seq", "ts", "pt", "marker", "kind", "dscp", "vlan", "pcp"):
        a, b = getattr(cols, name), getattr(back, name)
        assert a.dtype == b.dtype and a.tolist() == b.tolist(), name
