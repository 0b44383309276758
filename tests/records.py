"""Call records compared across observation methods (a probe on the path, a mirror, HEP):
the same calls, seen at different observation points."""

from __future__ import annotations

import copy
from typing import Any


def points_of(rec: dict[str, Any]) -> set[str | None]:
    """The observation points a call record's directions were measured at."""
    return {d["point"] for d in rec["directions"]} | {d["stream"]["point"] or None
                                                      for d in rec["directions"]}


def unplaced(rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` without where it was seen: every other figure must still match."""
    out = copy.deepcopy(rec)
    for d in out["directions"]:
        d.pop("point", None)
        d["stream"].pop("point", None)
        for e in d.get("event_streams", []):
            e.pop("point", None)
    return out
