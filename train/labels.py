"""Label vocabularies on the training side: the segmenter's BIO ids decoded back to spans
(as the runtime decodes them), and the classifier's labels.

The segmenter's per-token labels are written by :func:`mycelium.train.tokenizer.bio_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence

from mycelium.runtime.spec import REJECT, SolverSpec


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """A character span without the whitespace at its ends."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def spans_from_bio(
    text: str, offsets: Sequence[tuple[int, int]], labels: Sequence[int]
) -> list[tuple[int, int]]:
    """Character spans from BIO label ids, decoded as the runtime does (whitespace trimmed)."""
    spans: list[tuple[int, int]] = []
    inside = False
    for (start, end), label in zip(offsets, labels, strict=True):
        if label == 1 or (label == 2 and not inside):
            spans.append((start, end))
            inside = True
        elif label == 2 and inside:
            spans[-1] = (spans[-1][0], end)
        else:
            inside = False
    out = [trim_span(text, s, e) for s, e in spans]
    return [(s, e) for s, e in out if e > s]


def classifier_labels(spec: SolverSpec, reject: bool) -> tuple[str, ...]:
    """The classifier's labels: the operations, then ``REJECT`` when it learns one."""
    return (*spec.operations, REJECT) if reject else spec.operations
