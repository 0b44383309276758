"""Start-up (issue 11, bench/startup.py): each command loads only what it uses.

The imports in agent/cli.py and agent/config.py are late on purpose; one plain import
moved back to the top of a module would cost every run of the command and no test of
its output would notice. These hold the sets of modules, in a fresh interpreter (what
`voipprobe` runs in), not timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the live agent, the exporter and the config file need, and `analyze` does not.
NOT_FOR_ANALYZE = (
    "yaml",  # only a --config file, an override or check-config's dump
    "prometheus_client", "agent.export", "agent.daemon", "agent.capture.afpacket",
    "http.server", "ssl", "bcrypt", "asyncio",
)
# `version` and argument errors: no numpy, pydantic, config or engine.
NOT_FOR_VERSION = ("numpy", "pydantic", "yaml", "agent.config", "agent.engine", "agent.calls")


def _loaded_after(argv: list[str], prefixes: tuple[str, ...]) -> tuple[int, list[str]]:
    """Run ``main(argv)`` in a fresh interpreter; its exit code and the modules then
    loaded that are, or are inside, one of ``prefixes``."""
    code = (
        "import contextlib, io, json, sys\n"
        "from agent.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        f"    rc = main({argv!r})\n"
        f"prefixes = {prefixes!r}\n"
        "print(json.dumps([rc, sorted(m for m in sys.modules\n"
        "    if any(m == p or m.startswith(p + '.') for p in prefixes))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    rc, loaded = json.loads(out)
    return rc, loaded


def test_version_loads_no_numpy_pydantic_or_engine() -> None:
    assert _loaded_after(["version"], NOT_FOR_VERSION) == (0, [])


def test_analyze_loads_no_exporter_daemon_or_yaml() -> None:
    # the engine did load (the bundled sample was analysed): the check is not vacuous
    assert _loaded_after(["analyze", "--no-progress"], ("agent.engine", *NOT_FOR_ANALYZE)) == (
        0, ["agent.engine"])


def test_analyze_with_a_config_file_loads_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("calls: {interval_s: 5}\n")
    rc, loaded = _loaded_after(["analyze", "--no-progress", "--config", str(cfg)], ("yaml",))
    assert rc == 0 and "yaml" in loaded


def test_analyze_runs_on_one_thread() -> None:
    """numpy's OpenBLAS loads with one thread, not one a core (agent.cli._load_analyzer):
    nothing the probe does uses BLAS, and idle BLAS threads spin at start-up."""
    code = ("import contextlib, io, os\n"
            "from agent.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), "
            "contextlib.redirect_stderr(io.StringIO()):\n"
            "    rc = main(['analyze', '--no-progress'])\n"
            "import numpy\n"  # loaded by then: the threads would exist
            "print(rc, len(os.listdir('/proc/self/task')))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env=env).stdout
    assert out.split() == ["0", "1"]
