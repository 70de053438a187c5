"""bench.trl_bench's ratios over repetitions: medians per side, steady state and with start-up counted."""

from __future__ import annotations

import pytest

from bench.trl_bench import markdown_table
from bench.trl_common import ModelRun, SideResult, median_traces_per_s, speedups


def _result(side: str, seconds: float, startup: float) -> SideResult:
    return SideResult(
        side=side,
        setup=f"{side} setup",
        steps=2,
        traces=16,
        seconds=seconds,
        seconds_per_step=seconds / 2,
        traces_per_s=16 / seconds,
        step_seconds=[seconds / 2] * 2,
        startup_seconds=startup,
        updates=2,
        policy_tokens_per_trace=100.0,
        assistant_turns_per_trace=3.0,
        tool_calls_per_trace=2.0,
        exact_match=0.5,
        load_average=1.0,
        other_cores=0.01,
    )


def test_ratios_use_each_sides_median_with_and_without_startup():
    mtr = [_result("mtr", s, 100.0) for s in (10.0, 20.0, 12.0)]
    trl = [_result("trl", s, 10.0) for s in (40.0, 60.0, 50.0)]
    assert median_traces_per_s(mtr) == pytest.approx(16 / 12)
    assert median_traces_per_s(trl, with_startup=True) == pytest.approx(16 / 60)
    steady, cold = speedups(mtr + trl)
    assert steady == pytest.approx(round((16 / 12) / (16 / 50), 2))
    assert cold == pytest.approx(round((16 / 112) / (16 / 60), 2))  # start-up counted: MTR's 100 s weigh in
    assert speedups(mtr) == (None, None)


def test_table_has_one_row_per_side_with_min_and_median():
    results = [_result("mtr", s, 100.0) for s in (10.0, 20.0, 12.0)] + [_result("trl", 50.0, 10.0)]
    table = markdown_table([ModelRun("default", results, *speedups(results))])
    rows = [line for line in table.splitlines() if line.startswith("| default |")]
    assert len(rows) == 2
    assert "| 3 x 2 |" in rows[0] and "| 5.0 / 6.0 |" in rows[0] and "| 100.0 |" in rows[0]
    assert rows[0].count("x |") >= 2 and "| - | - |" in rows[1]  # ratios on MTR's row only
