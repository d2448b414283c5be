"""The documentation's generated fragments match the code they describe (make docs rewrites them)."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from typing import Any

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


def test_a_ratio_under_its_goal_does_not_round_up_to_it() -> None:
    """0.76 of the ceiling once read "0.8x" in a table whose goal is 0.8x; each round is shown too."""
    from tests.bench.report import table

    def part(*rates: float) -> dict[str, Any]:
        runs = [{"beats_per_s": rate, "anomaly_share": 0.44, "cpu_us_per_beat": 10.0} for rate in rates]
        return {**runs[len(runs) // 2], "runs": runs}

    results = {
        **{"cpu_count": 2, "beats": 500_000, "rounds": 3, "model": "model.onnx"},
        "worker_binary": part(108_944, 90_480, 91_947),
        "passthrough_binary": part(141_008, 121_063, 119_639),
        "naive_binary": part(13.7),
    }
    row = next(line for line in table(results).splitlines() if line.startswith("| binary beats/s"))
    assert "0.75x of the ceiling (rounds 0.77 / 0.75 / 0.77; goal >= 0.8x)" in row


def test_a_days_second_run_is_kept_beside_the_first_and_listed_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate, "RESULTS", tmp_path)
    source = tmp_path / "bench.json"
    source.write_text("{}")
    kept = [generate._keep(source, "bench", today="2026-12-03").name for _ in range(3)]
    assert kept == ["bench-2026-12-03.json", "bench-2026-12-03-2.json", "bench-2026-12-03-3.json"]
    (tmp_path / "bench-2026-12-02.json").write_text("{}")
    assert [p.name for p in generate._runs("bench-*.json")] == [*reversed(kept), "bench-2026-12-02.json"]
    assert generate._when("bench-2026-12-03-2") == "2026-12-03, run 2"
