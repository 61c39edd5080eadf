"""Decode the segmenter's token labels into quantity spans with a used-probability.

Labels are BIO over quantities, with two kinds: ``*-QTY`` (a quantity the
solution uses) and ``*-UNUSED`` (a quantity it does not). A span's
used-probability is the mean, over its tokens, of the used labels' share of the
quantity labels' probability. A segmenter with only ``O/B-QTY/I-QTY`` labels
reads every span as used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .quantities import parse_quantity
from .results import Span
from .tokenization import Encoded


def decode_spans(
    text: str, encoded: Encoded, probs: np.ndarray, label_names: Sequence[str]
) -> list[Span]:
    """Spans of one problem from per-token label probabilities (T, L)."""
    names = list(label_names)
    begin = np.array([n.startswith("B") for n in names])
    inside = np.array([n.startswith("I") for n in names])
    used = np.array([n.endswith("QTY") for n in names])
    quantity = begin | inside
    best = probs.argmax(axis=-1)
    pieces: list[list[int]] = []  # token indices of each span
    open_span = False
    for token, label in enumerate(best):
        if begin[label] or (inside[label] and not open_span):
            pieces.append([token])
            open_span = True
        elif inside[label]:
            pieces[-1].append(token)
        else:
            open_span = False
    spans = []
    for tokens in pieces:
        start, end = encoded.offsets[tokens[0]][0], encoded.offsets[tokens[-1]][1]
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end <= start:
            continue
        mass = probs[tokens][:, quantity].sum(axis=-1)
        share = probs[tokens][:, used & quantity].sum(axis=-1) / np.maximum(mass, 1e-9)
        piece = text[start:end]
        spans.append(Span(start, end, piece, parse_quantity(piece), float(share.mean())))
    return spans
