"""How far the solver's confidence can be trusted: accuracy by confidence (diagnose).

The confidence of an answer is its value pool's share of the scorer's probability over
the valid candidates (``scorer.pick_index``). A user who answers only above some
confidence needs two figures from a labelled set: how accurate the answers are in each
confidence band, and how accurate the most confident share of the answers is
(selective accuracy at a coverage). Both are read here from (confidence, correct) pairs;
a problem without an answer counts with confidence 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BANDS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # band edges; the last band includes 1.0
COVERAGES = (0.1, 0.25, 0.5, 0.75, 1.0)  # the most confident share of the problems


def confidence_report(confidences: Sequence[float], correct: Sequence[bool]
                      ) -> dict[str, Any]:
    """Accuracy per confidence band, selective accuracy per coverage, and the expected
    calibration error (the problems' weighted mean |accuracy - mean confidence| over the
    bands). Raises ValueError when the sequences differ in length or are empty."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences for {len(correct)} outcomes")
    if not confidences:
        raise ValueError("no problems to report confidence on")
    total = len(confidences)
    bands = []
    gap = 0.0
    for low, high in zip(BANDS, BANDS[1:], strict=False):
        last = high == BANDS[-1]
        members = [k for k, c in enumerate(confidences)
                   if low <= c < high or (last and c == high)]
        if not members:
            bands.append({"confidence": [low, high], "problems": 0, "accuracy": None})
            continue
        accuracy = sum(correct[k] for k in members) / len(members)
        mean = sum(confidences[k] for k in members) / len(members)
        gap += len(members) / total * abs(accuracy - mean)
        bands.append({"confidence": [low, high], "problems": len(members),
                      "accuracy": round(accuracy, 4), "mean_confidence": round(mean, 4)})
    order = sorted(range(total), key=lambda k: -confidences[k])  # stable: input order ties
    selective = []
    for share in COVERAGES:
        count = max(1, round(share * total))
        kept = order[:count]
        selective.append({"coverage": share, "problems": count,
                          "accuracy": round(sum(correct[k] for k in kept) / count, 4),
                          "min_confidence": round(confidences[kept[-1]], 4)})
    return {"bands": bands, "selective": selective,
            "expected_calibration_error": round(gap, 4)}
