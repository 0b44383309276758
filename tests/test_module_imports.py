"""Import seams (issue 10 item 7): the config needs nothing from the exporter, and the
daemon names its capture sources in plain imports (no importlib, no name lookups)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

AGENT = Path(__file__).resolve().parents[1] / "agent"


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):  # late imports inside functions too
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_config_imports_nothing_from_export() -> None:
    mods = _imported(AGENT / "config.py") | _imported(AGENT / "config_text.py")
    assert not {m for m in mods if m.startswith("agent.export")}, mods
    # and loading it loads no exporter module (nor anything that does)
    code = ("import sys, agent.config; "
            "print(sorted(m for m in sys.modules if m.startswith('agent.export')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_default_exporter_port_is_the_configs() -> None:
    from agent.config import DEFAULT_EXPORTER_PORT, ExporterConfig
    from agent.export.http import DEFAULT_PORT

    assert DEFAULT_PORT == DEFAULT_EXPORTER_PORT == 9957
    assert ExporterConfig().listen == "127.0.0.1:9957"


def test_daemon_imports_its_sources_directly() -> None:
    mods = _imported(AGENT / "daemon.py")
    assert "importlib" not in mods
    assert {"agent.capture.afpacket", "agent.capture.fallback"} <= mods
    assert "import_module" not in (AGENT / "daemon.py").read_text()
