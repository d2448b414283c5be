"""The documentation's generated fragments match the code they describe (make docs rewrites them)."""

from __future__ import annotations

import difflib
import importlib.util

import pytest

from tests.support.broker import REPO

_spec = importlib.util.spec_from_file_location("docs_generate", REPO / "docs" / "generate.py")
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)


@pytest.mark.parametrize("name", sorted(generate.FRAGMENTS))
def test_a_generated_page_is_not_stale(name: str) -> None:
    path = generate.GENERATED / name
    expected = generate.render(name)
    actual = path.read_text() if path.exists() else ""
    diff = "".join(
        difflib.unified_diff(actual.splitlines(True), expected.splitlines(True), str(path), "code")
    )
    assert actual == expected, f"docs/generated/{name} is stale: run `make docs`\n{diff[:3000]}"


def test_every_dead_letter_reason_has_a_meaning() -> None:
    from ecg_anomaly.schemas import messages as m

    assert set(m.REASON_MEANINGS) == set(m.DeadLetterReason)
