"""The README's "Many sites" section gives a federation scrape config and a remote_write
example that Prometheus accepts (`promtool check config`), federating what the Fleet row
of the dashboard reads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SECTION = (REPO / "README.md").read_text(encoding="utf-8").split(
    "\n## Many sites\n", 1)[1].split("\n## ", 1)[0]


def _blocks() -> list[dict[str, object]]:
    blocks = re.findall(r"```yaml\n(.*?)```", SECTION, re.DOTALL)
    return [yaml.safe_load("\n".join(line.removeprefix("  ") for line in b.splitlines()))
            for b in blocks]


def test_section_says_how_to_set_site() -> None:
    assert "exporter.site" in SECTION and "distinct per probe" in SECTION


def test_federation_and_remote_write_configs_are_valid(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI (Debian package prometheus)")
        pytest.skip("promtool missing (Debian package prometheus)")
    federate, remote = _blocks()
    (job,) = federate["scrape_configs"]  # type: ignore[index]
    assert job["honor_labels"] is True and job["metrics_path"] == "/federate"
    assert job["params"]["match[]"] == ['{__name__=~"voipprobe:.*"}']
    (write,) = remote["remote_write"]  # type: ignore[index]
    assert write["write_relabel_configs"][0]["regex"] == "voipprobe:.*"
    (tmp_path / "remote-write.password").write_text("secret\n", encoding="utf-8")
    write["basic_auth"]["password_file"] = str(tmp_path / "remote-write.password")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({**federate, **remote}), encoding="utf-8")
    proc = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
