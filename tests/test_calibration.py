"""Accuracy by confidence (runtime/calibration.py)."""

from __future__ import annotations

import math

import pytest

from mycelium.runtime.calibration import (
    CALIBRATION_INPUTS,
    ConfidenceCalibration,
    calibration_inputs,
    confidence_report,
)


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


# --------------------------------------------------------------------- the fitted calibration

def _rows(count: int, seed: int = 0) -> list[tuple[dict[str, float], float, bool]]:
    """Picks whose raw share overstates: right with probability 0.3 x share."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        share = rng.uniform(0.05, 0.95)
        logits = [rng.uniform(-3, 3) for _ in range(rng.randint(1, 9))]
        inputs = calibration_inputs(logits, list(range(len(logits))), share)
        rows.append((inputs, share, rng.random() < 0.3 * share))
    return rows


def test_fitted_calibration_removes_the_overstatement() -> None:
    from mycelium.train.confidence import calibration_figures, fit_calibration

    rows = _rows(4000)
    calibration = fit_calibration(rows)
    assert calibration.inputs == CALIBRATION_INPUTS
    assert calibration.weights[CALIBRATION_INPUTS.index("share_logit")] > 0.3
    figures = calibration_figures(_rows(4000, seed=1), calibration)  # fresh picks
    assert figures["raw"]["expected_calibration_error"] > 0.3
    assert figures["calibrated"]["expected_calibration_error"] < 0.05
    assert abs(figures["calibrated"]["mean_confidence"] - figures["accuracy"]) < 0.03
    low, high = ({**rows[0][0], "share_logit": z} for z in (-2.0, 2.0))
    assert calibration.probability(low) < calibration.probability(high)


def test_calibration_needs_right_and_wrong_picks() -> None:
    from mycelium.train.confidence import fit_calibration

    inputs = calibration_inputs([0.0], [1], 1.0)
    for rows in ([], [(inputs, 1.0, True)] * 5):
        with pytest.raises(ValueError, match="right and wrong"):
            fit_calibration(rows)


def test_calibration_round_trips_and_bad_ones_are_refused() -> None:
    calibration = ConfidenceCalibration(CALIBRATION_INPUTS, (1.0, -0.5, 0.25, 0.1), -2.0)
    again = ConfidenceCalibration.from_dict(calibration.to_dict())
    assert again == calibration
    observed = dict.fromkeys(CALIBRATION_INPUTS, 0.0)
    assert calibration.probability(observed) == pytest.approx(1 / (1 + math.exp(2.0)))
    for bad in ({"inputs": ["share_logit", "words"], "weights": [1, 1], "bias": 0},
                {"inputs": ["share_logit"], "weights": [1, 2], "bias": 0},
                {"inputs": ["share_logit"], "weights": [float("nan")], "bias": 0}):
        with pytest.raises(ValueError):
            ConfidenceCalibration.from_dict(bad)


def test_a_calibration_needs_the_scorer_it_calibrates() -> None:
    from mycelium.runtime.errors import ArtifactsError
    from mycelium.runtime.spec import SolverSpec

    stored = ConfidenceCalibration(("share_logit",), (1.0,), 0.0).to_dict()
    with pytest.raises(ArtifactsError, match="needs one"):
        SolverSpec.from_dict({**SolverSpec().to_dict(), "confidence_calibration": stored})
