"""Fit the answer's confidence to the probability that it is right (`mycelium-train scorer
--calibrate`).

The runtime's raw confidence is the winning value's share of the scorer's probability over
the valid candidates; where the right value is among no candidate it still reads high.
A logistic regression over what a pick shows (``runtime.calibration.calibration_inputs``)
is fitted on picks the scorer made without having seen the problem (its held-out logits,
``scorer.held_out_logits``), so the fitted probability is that of a problem the scorer
never saw. The train split's problems were seen by the specialists, so on dev the
calibrated confidence can still run a little high; ``confidence_report`` measures it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mycelium.runtime.calibration import (
    CALIBRATION_INPUTS,
    ConfidenceCalibration,
    calibration_inputs,
    confidence_report,
)
from mycelium.runtime.scorer import pick_index

from .scorer import ProblemCandidates


def picks(problems: Sequence[ProblemCandidates], logits: Sequence[Sequence[float]]
          ) -> list[tuple[dict[str, float], float, bool]]:
    """Per problem with a valid candidate: the calibration inputs of its pick, the raw
    confidence and whether the picked value is the gold one."""
    out = []
    for problem, z in zip(problems, logits, strict=True):
        if not problem.values:
            continue
        index, share = pick_index(problem.values, z)
        out.append((calibration_inputs(z, problem.values, share), share,
                    problem.values[index] == problem.gold))
    return out


def fit_calibration(rows: Sequence[tuple[dict[str, float], float, bool]], l2: float = 1e-3,
                    steps: int = 50) -> ConfidenceCalibration:
    """Logistic regression of rightness on the inputs (standardized, Newton steps, an L2
    penalty on the weights but not the bias), returned in the inputs' own units."""
    if not rows or len({right for _, _, right in rows}) < 2:
        raise ValueError("calibration needs right and wrong picks among the problems")
    x = np.array([[inputs[name] for name in CALIBRATION_INPUTS] for inputs, _, _ in rows])
    y = np.array([float(right) for _, _, right in rows])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    design = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    w = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2 * len(x))
    penalty[0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-design @ w))
        gradient = design.T @ (p - y) + penalty * w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    weights = w[1:] / scale
    bias = float(w[0] - (weights * mean).sum())
    return ConfidenceCalibration(CALIBRATION_INPUTS, tuple(float(v) for v in weights), bias)


def calibration_figures(rows: Sequence[tuple[dict[str, float], float, bool]],
                        calibration: ConfidenceCalibration, unanswered: int = 0
                        ) -> dict[str, Any]:
    """Expected calibration error and selective accuracy of the raw and the calibrated
    confidence (``unanswered`` problems count as wrong, with confidence 0)."""
    right = [r for _, _, r in rows] + [False] * unanswered
    raw = [share for _, share, _ in rows] + [0.0] * unanswered
    fitted = [calibration.probability(inputs) for inputs, _, _ in rows] + [0.0] * unanswered
    out = {}
    for name, confidences in (("raw", raw), ("calibrated", fitted)):
        report = confidence_report(confidences, right)
        out[name] = {"expected_calibration_error": report["expected_calibration_error"],
                     "mean_confidence": round(float(np.mean(confidences)), 4)}
    out["accuracy"] = round(float(np.mean(right)), 4)
    return out
