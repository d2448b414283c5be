"""Locate the command-line tools the deploy tests need (`make tools` installs them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.broker import REPO


def require_tool(name: str) -> str:
    """Path of ``name`` in .tools/bin or on PATH; a failure (never a skip) when missing."""
    local = REPO / ".tools" / "bin" / name
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make tools`", pytrace=False)
    return str(Path(found))
