"""Decoding segmenter labels into spans with a used-probability."""

import numpy as np
import pytest

from mycelium.runtime.segments import decode_spans
from mycelium.runtime.tokenization import Encoded

LABELS = ("O", "B-QTY", "I-QTY", "B-UNUSED", "I-UNUSED")
TEXT = "Tom has 12 apples and 3 pears in 2 bags"
#       tokens: Tom| has| 12| apples| and| 3| pears| in| 2| bags
OFFSETS = [(0, 3), (3, 7), (7, 10), (10, 17), (17, 21), (21, 23), (23, 29), (29, 32),
           (32, 34), (34, 39)]


def probs_for(labels: list[int], confidence: float = 0.9) -> np.ndarray:
    out = np.full((len(labels), len(LABELS)), (1 - confidence) / (len(LABELS) - 1))
    out[np.arange(len(labels)), labels] = confidence
    return out


def test_spans_offsets_values_and_used_probability() -> None:
    labels = [0, 0, 1, 0, 0, 3, 0, 0, 1, 0]
    spans = decode_spans(TEXT, Encoded(list(range(10)), OFFSETS), probs_for(labels), LABELS)
    assert [(s.start, s.end, s.text) for s in spans] == [(8, 10, "12"), (22, 23, "3"),
                                                       (33, 34, "2")]
    assert [int(s.value) for s in spans] == [12, 3, 2]
    assert spans[0].used_prob > 0.9 and spans[1].used_prob < 0.1


def test_inside_after_outside_starts_a_span_and_joins_tokens() -> None:
    text = "costs 1,200 dollars"
    offsets = [(0, 5), (5, 7), (7, 8), (8, 11), (11, 19)]
    spans = decode_spans(text, Encoded(list(range(5)), offsets),
                         probs_for([0, 2, 2, 2, 0]), LABELS)
    assert [(s.text, int(s.value)) for s in spans] == [("1,200", 1200)]


@pytest.mark.parametrize("labels", [("O", "B-QTY", "I-QTY")])
def test_three_label_segmenter_reads_every_span_as_used(labels) -> None:
    probs = np.eye(3)[[0, 0, 1, 0, 0, 1, 0, 0, 0, 0]]
    spans = decode_spans(TEXT, Encoded(list(range(10)), OFFSETS), probs, labels)
    assert [s.used_prob for s in spans] == [1.0, 1.0]
