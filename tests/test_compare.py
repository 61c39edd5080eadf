"""Confidence intervals and the paired comparison of diagnose reports."""

from __future__ import annotations

import pytest

from mycelium.runtime.compare import compare_reports, mcnemar_p, wilson_interval
from mycelium.runtime.errors import InputError


def _report(correct_ids: set[int], ids: range = range(10)) -> dict:
    return {"problems": [{"id": i, "stage": "correct" if i in correct_ids else "scorer"}
                         for i in ids]}


def test_wilson_interval_brackets_the_rate() -> None:
    low, high = wilson_interval(44, 748)
    assert low < 44 / 748 < high
    assert 0.043 < low < 0.045 and 0.077 < high < 0.079  # 44/748: 5.9 % [4.4 %, 7.8 %]
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_mcnemar_exact_values() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(8, 4) == pytest.approx(2 * (1 + 12 + 66 + 220 + 495) / 4096)
    assert mcnemar_p(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_p(3, 3) == 1.0


def test_compare_reports_counts_changes() -> None:
    out = compare_reports(_report({0, 1, 2}), _report({1, 2, 3, 4}))
    assert (out["baseline_correct"], out["correct"], out["gained"], out["lost"]) == (3, 4, 2, 1)
    assert out["mcnemar_p"] == 1.0


def test_compare_reports_needs_the_same_problems() -> None:
    with pytest.raises(InputError, match="different problems"):
        compare_reports(_report(set()), _report(set(), range(5)))
    with pytest.raises(InputError, match="not a diagnose report"):
        compare_reports({"summary": {}}, _report(set()))
