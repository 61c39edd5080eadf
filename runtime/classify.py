"""C2, the operation classifier: one function per classifier kind, each giving the
operation log-probabilities (R, labels) of a batch's span groups."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .batching import Specialist
from .models import log_softmax
from .results import Span
from .spec import SolverSpec
from .stats import timed
from .templates import classifier_suffix, group_pair
from .tokenization import GroupedProblem, group_tokens, span_tokens

ENCODER_ROWS_PER_CALL = 64  # encoder classifier rows per call (length-sorted: little padding)
GROUP_SLOTS = 64  # span groups per row of a span-group classifier (more: the problem repeats)
GROUP_CELLS_PER_CALL = 2**17  # rows x group slots x tokens per span-group classifier call

GroupRow = tuple[int, list[tuple[int, str]]]  # (problem index, the group's (span, text))


@dataclass(frozen=True)
class GroupBatch:
    """The span groups of a batch of problems, as the classifier reads them."""

    questions: list[str]
    spans: list[list[Span]]
    rows: list[GroupRow]
    prefixes: list[str]  # each problem as a decoder reads it (``marked_problem``)


def classify_decoder(model: Specialist, batch: GroupBatch, spec: SolverSpec,
                     labels: int) -> np.ndarray:
    """A decoder classifier: each problem's prefix prefilled once, then one short group
    suffix per row read after its problem's cache."""
    prefix, _ = model.prefix_states(batch.prefixes, spec.max_problem_tokens)
    rows = batch.rows
    suffixes = model.suffix_ids(
        [classifier_suffix(spec.templates, items) for _, items in rows], spec.max_suffix_tokens
    )
    out = []
    step = model.rows_per_call(prefix, spec.max_suffix_tokens)
    for start in range(0, len(rows), step):
        chunk = range(start, min(start + step, len(rows)))
        state = prefix.take(np.array([rows[i][0] for i in chunk], dtype=np.int64))
        part = [suffixes[i] for i in chunk]
        model.stats.tokens[model.name] += sum(len(x) for x in part)
        logits, _ = model.runner.prefill(part, state)
        out.append(log_softmax(logits))
    return np.concatenate(out) if out else np.zeros((0, labels))


def classify_pairs(model: Specialist, batch: GroupBatch, spec: SolverSpec,
                   labels: int) -> np.ndarray:
    """An encoder classifier: one text pair per row (``group_pair``), run in
    length-sorted chunks."""
    rows = batch.rows
    with timed(model.stats, "tokenize"):
        bounds = [[(span.start, span.end) for span in s] for s in batch.spans]
        pairs = [group_pair(spec.templates, batch.questions[p], bounds[p], items)
                 for p, items in rows]
        encoded = model.tokenizer.encode_pairs(
            pairs, spec.max_problem_tokens, spec.max_suffix_tokens)
    out = np.zeros((len(rows), labels), dtype=np.float32)
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i].ids))
    for start in range(0, len(order), ENCODER_ROWS_PER_CALL):
        chunk = order[start:start + ENCODER_ROWS_PER_CALL]
        part = [encoded[i] for i in chunk]
        model.stats.tokens[model.name] += sum(len(row.ids) for row in part)
        out[chunk] = log_softmax(model.runner.logits(part))
    return out


def classify_groups(model: Specialist, batch: GroupBatch, spec: SolverSpec,
                    labels: int) -> np.ndarray:
    """A span-group classifier: each problem read once (framed by its special tokens)
    with all its groups (at most GROUP_SLOTS per row), rows in length order, chunked to
    GROUP_CELLS_PER_CALL."""
    rows = batch.rows
    with timed(model.stats, "tokenize"):
        encoded = model.tokenizer.encode_framed(batch.questions, spec.max_problem_tokens)
        per_span = [span_tokens(enc.offsets, [(s.start, s.end) for s in problem])
                    for enc, problem in zip(encoded, batch.spans, strict=True)]
    by_problem: dict[int, list[int]] = defaultdict(list)
    for index, (p, _) in enumerate(rows):
        by_problem[p].append(index)
    feeds: list[tuple[GroupedProblem, list[int]]] = []  # a row and its groups' indices
    for p, indices in by_problem.items():
        for start in range(0, len(indices), GROUP_SLOTS):
            part = indices[start:start + GROUP_SLOTS]
            members = group_tokens(per_span[p], [[i for i, _ in rows[r][1]] for r in part])
            feeds.append((GroupedProblem(encoded[p].ids, members), part))
    feeds.sort(key=lambda feed: len(feed[0].ids))
    out = np.zeros((len(rows), labels), dtype=np.float32)
    start = 0
    while start < len(feeds):
        end, slots = start + 1, len(feeds[start][1])
        while end < len(feeds):  # grow while the padded call stays in budget
            slots = max(slots, len(feeds[end][1]))
            if (end + 1 - start) * slots * len(feeds[end][0].ids) > GROUP_CELLS_PER_CALL:
                break
            end += 1
        chunk = feeds[start:end]
        model.stats.tokens[model.name] += sum(len(row.ids) for row, _ in chunk)
        logits = log_softmax(model.runner.logits([row for row, _ in chunk]))
        for b, (_, part) in enumerate(chunk):
            out[part] = logits[b, :len(part)]
        start = end
    return out


Classify = Callable[[Specialist, GroupBatch, SolverSpec, int], np.ndarray]

# the manifest's classifier kind (``manifest.model_kind``) -> how its groups are read
CLASSIFY: dict[str, Classify] = {
    "decoder": classify_decoder,
    "pair_classifier": classify_pairs,
    "span_group_classifier": classify_groups,
}
