"""How far the solver's confidence can be trusted: accuracy by confidence (diagnose).

The confidence of an answer is its value pool's share of the scorer's probability over
the valid candidates (``scorer.pick_index``). A user who answers only above some
confidence needs two figures from a labelled set: how accurate the answers are in each
confidence band, and how accurate the most confident share of the answers is
(selective accuracy at a coverage). Both are read here from (confidence, correct) pairs;
a problem without an answer counts with confidence 0.

The raw confidence says nothing of the problems whose right answer is among no candidate
(most of them, for small specialists), so it overstates; a :class:`ConfidenceCalibration`
fitted on held-out train picks maps it (and what else the pick shows) to the probability
that the answer is right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


CALIBRATION_INPUTS = ("share_logit", "log_valid", "log_values", "top_logit")


def calibration_inputs(logits: Sequence[float], values: Sequence[Any], share: float
                       ) -> dict[str, float]:
    """What a calibration reads of one answered problem: the log-odds of the winning value's
    pool share, the log of the number of valid candidates and of distinct values, and the
    best candidate's scorer logit (not normalized per problem, so it carries how sure the
    models were of the best program)."""
    clipped = min(max(share, 1e-4), 1 - 1e-4)
    return {"share_logit": math.log(clipped / (1 - clipped)),
            "log_valid": math.log(len(logits)),
            "log_values": math.log(len(set(values))),
            "top_logit": max(logits)}


@dataclass(frozen=True)
class ConfidenceCalibration:
    """P(the answer is right) = sigmoid(bias + weights . inputs), fitted on held-out picks
    of the train split (`mycelium-train scorer --calibrate`); stored in mycelium.json as
    ``confidence_calibration`` next to the answer scorer whose picks it was fitted on."""

    inputs: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float

    def probability(self, observed: Mapping[str, float]) -> float:
        """The calibrated confidence of one answered problem (:func:`calibration_inputs`)."""
        z = self.bias + sum(w * observed[name]
                            for name, w in zip(self.inputs, self.weights, strict=True))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"inputs": list(self.inputs), "weights": [round(w, 6) for w in self.weights],
                "bias": round(self.bias, 6)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfidenceCalibration:
        """Validate the stored form: known inputs, one finite weight each."""
        inputs = tuple(str(name) for name in data["inputs"])
        unknown = sorted(set(inputs) - set(CALIBRATION_INPUTS))
        if unknown or len(set(inputs)) != len(inputs):
            raise ValueError(f"confidence_calibration inputs unknown or repeated: "
                             f"{unknown or sorted(inputs)}")
        weights = tuple(float(w) for w in data["weights"])
        bias = float(data["bias"])
        if len(weights) != len(inputs) or not all(map(math.isfinite, (*weights, bias))):
            raise ValueError("confidence_calibration needs one finite weight per input "
                             "and a finite bias")
        return cls(inputs, weights, bias)
