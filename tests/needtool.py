"""An external tool a test needs: skipped when missing, but a failure in CI (CI=true),
where scripts/test.sh installs it."""

from __future__ import annotations

import os
import shutil

import pytest


def need_tool(tool: str) -> str:
    """The path of ``tool``; skip (fail under CI) when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} not installed")
        pytest.skip(f"{tool} not installed")
    return path
