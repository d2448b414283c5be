"""Headless Chromium (Debian's ``chromium``, installed by ``make tools``) for the live page's test.

``--dump-dom`` prints the DOM after ``--virtual-time-budget`` virtual milliseconds; virtual time does
not advance while a fetch is pending, so the page's polls finish and their results are drawn before
the dump. Without the background-networking flags Chromium tries to reach Google's services, which
a closed network refuses. Each run gets a fresh profile.
"""

from __future__ import annotations

import subprocess
import tempfile

from tests.support.tools import require_tool

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def dump_dom(url: str, budget_ms: int = 6000, timeout: float = 120.0) -> str:
    """The page's DOM, serialised, once its scripts have run for ``budget_ms`` virtual milliseconds."""
    chromium = require_tool("chromium")
    with tempfile.TemporaryDirectory(prefix="ecg-chromium-") as profile:
        command = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        result = subprocess.run(
            [*command, "--dump-dom", url], capture_output=True, text=True, timeout=timeout, check=False
        )
    if result.returncode != 0:
        raise AssertionError(f"chromium exited with {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout
