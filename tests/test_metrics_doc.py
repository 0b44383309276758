"""docs/metrics.md is what scripts/gen_metrics_doc.py generates from agent/export/metrics.py,
and it lists every family the exporter serves."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from prometheus_client import generate_latest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gen_metrics_doc.py"
DOC = REPO / "docs" / "metrics.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_metrics_doc", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text: str) -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([a-z_:]+)` \| (\w+) \| (.*?) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    return rows


def test_committed_doc_is_generated() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=60, check=True, cwd=REPO)
    assert proc.stdout == DOC.read_text(encoding="utf-8"), (
        "docs/metrics.md is stale: run python scripts/gen_metrics_doc.py --write")


def test_doc_lists_every_served_family_with_its_labels() -> None:
    gen = _generator()
    metrics = gen.sample_metrics()
    exposed = generate_latest(metrics.registry).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\w+)$", exposed, re.MULTILINE))
    rows = _rows(DOC.read_text(encoding="utf-8"))
    for name, kind in types.items():  # the text format's TYPE line names counters _total
        assert name in rows, f"{name} missing from docs/metrics.md"
        assert rows[name][0] == kind
    assert len(rows) == len(types)
    assert rows["voipprobe_calls_ended_total"][:2] == (
        "counter", "`site`, `peer`, `end_reason`, `status_class`")
    assert rows["voipprobe_call_mos"][:2] == (
        "histogram", "`site`, `peer`, `direction`, `codec`")
    assert rows["voipprobe_capture_kernel_drops_total"][:2] == (
        "counter", "`site`, `interface`")
    assert rows["voipprobe_config_last_reload_successful"] == (
        "gauge", "`site`", "1 when the last configuration (re)load succeeded.")
