"""The README says what the code does: no promises of what is not there, and the
section the start-up errors point at exists and says what they say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.os_errors import CAPTURE_HELP

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("stale", [
    "later, live traffic", "being built", "see the issues", "work in progress", "issue 4",
])
def test_no_stale_promises(stale: str) -> None:
    assert stale not in README


def test_the_section_the_capture_error_points_at_says_how_to_grant_cap_net_raw() -> None:
    section = re.search(r'see README "([^"]+)"', CAPTURE_HELP)
    assert section is not None
    body = README.split(f"\n## {section.group(1)}\n", 1)[1].split("\n## ", 1)[0]
    assert "AmbientCapabilities=CAP_NET_RAW" in body
    assert "exporter.listen 127.0.0.1:9957: address already in use" in body


def test_every_relative_link_of_the_readme_and_docs_names_a_file_that_exists() -> None:
    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    broken = [f"{page.name}: {target}"
              for page in pages
              for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text())
              if not (page.parent / target).exists()]
    assert broken == []
    assert len(pages) >= 8   # README and the reference pages it links to


@pytest.mark.parametrize("section", [
    "Quick start", "Install on a gateway", "Where to capture", "Running the agent",
    "Configuration", "Metrics and the exporter", "Dashboard and alerts", "Privacy",
    "Troubleshooting", "Performance",
])
def test_the_readme_has_the_sections_an_admin_looks_for(section: str) -> None:
    assert f"\n## {section}\n" in README
