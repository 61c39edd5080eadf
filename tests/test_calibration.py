"""Accuracy by confidence (runtime/calibration.py)."""

from __future__ import annotations

import pytest

from mycelium.runtime.calibration import confidence_report


def test_bands_hold_each_problem_once_with_its_accuracy() -> None:
    confidences = [0.05, 0.3, 0.35, 0.9, 1.0, 0.85]
    correct = [False, True, False, True, True, False]
    report = confidence_report(confidences, correct)
    bands = {tuple(b["confidence"]): b for b in report["bands"]}
    assert bands[(0.0, 0.2)]["problems"] == 1 and bands[(0.0, 0.2)]["accuracy"] == 0.0
    assert bands[(0.2, 0.4)]["problems"] == 2 and bands[(0.2, 0.4)]["accuracy"] == 0.5
    assert bands[(0.4, 0.6)] == {"confidence": [0.4, 0.6], "problems": 0, "accuracy": None}
    assert bands[(0.8, 1.0)]["problems"] == 3  # 1.0 falls in the last band
    assert bands[(0.8, 1.0)]["accuracy"] == round(2 / 3, 4)
    # |0 - 0.05| * 1/6 + |0.5 - 0.325| * 2/6 + |2/3 - 0.9167| * 3/6
    assert report["expected_calibration_error"] == pytest.approx(
        0.05 / 6 + 0.175 * 2 / 6 + (2.75 / 3 - 2 / 3) * 3 / 6, abs=1e-4)


def test_selective_accuracy_keeps_the_most_confident_first() -> None:
    confidences = [0.1 * k for k in range(10)]  # the confident half is k = 5..9
    correct = [k >= 7 for k in range(10)]
    selective = {s["coverage"]: s for s in confidence_report(confidences, correct)["selective"]}
    assert selective[0.1] == {"coverage": 0.1, "problems": 1, "accuracy": 1.0,
                              "min_confidence": 0.9}
    assert selective[0.5]["accuracy"] == 0.6 and selective[0.5]["min_confidence"] == 0.5
    assert selective[1.0]["accuracy"] == 0.3 and selective[1.0]["problems"] == 10


def test_perfect_calibration_has_no_error() -> None:
    report = confidence_report([1.0, 1.0, 0.0, 0.0], [True, True, False, False])
    assert report["expected_calibration_error"] == 0.0


@pytest.mark.parametrize(("confidences", "correct"), [([], []), ([0.5], [True, False])])
def test_bad_input_is_refused(confidences: list[float], correct: list[bool]) -> None:
    with pytest.raises(ValueError):
        confidence_report(confidences, correct)
