"""Supervision records encoded as the specialists read them.

Inputs are built exactly as the runtime builds them: the problem text is tokenized alone
(truncated to ``max_problem_tokens``) and the template suffix alone (truncated to
``max_suffix_tokens``), then concatenated.

The classifier and the extractor see every span group of a problem after the same problem
text, so a problem's groups are *packed* into one item: the problem's tokens once, then
one block per group (``batching.collate_packed`` builds the block mask).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mycelium.runtime.spec import SolverSpec
from mycelium.runtime.templates import classifier_suffix, extractor_suffix, marked_problem

from .labels import classifier_labels, trim_span
from .tokenizer import bio_labels
from .vocab import Vocab


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSONL file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass
class SegItem:
    """One problem for the segmenter."""

    ids: list[int]
    labels: list[int]
    offsets: list[tuple[int, int]]
    question: str
    gold: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PackedItem:
    """One problem and all its groups, packed into a single row."""

    question: list[int]
    blocks: list[list[int]]  # suffix (+ target + eos for the extractor) per group
    # classifier: label per block; extractor: index in its block where the target starts
    labels: list[int]
    targets: list[str] = field(default_factory=list)  # extractor target text per block
    suffix_lens: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.question) + sum(len(b) for b in self.blocks)


def group_by_question(records: list[dict[str, Any]],
                      split: str) -> dict[str, list[dict[str, Any]]]:
    """The records of one split, grouped by problem text (in first-seen order)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("split") == split:
            grouped.setdefault(record["question"], []).append(record)
    return grouped


def problem_prefixes(grouped: dict[str, list[dict[str, Any]]], spec: SolverSpec) -> list[str]:
    """Each problem's text as the classifier and extractor read it (``marked_problem``)."""
    out = []
    for question, rows in grouped.items():
        spans = rows[0].get("spans")
        if spans is None and spec.templates.span_marker:
            raise ValueError(f"step record {rows[0].get('id')} has no 'spans': the span "
                             "markers need them (rewrite the data with `mycelium-train data`)")
        out.append(marked_problem(spec.templates, question,
                                  [(int(a), int(b)) for a, b in spans or []]))
    return out


def check_no_pad(ids: list[int], pad: int, where: str) -> None:
    """Refuse a real input that holds the pad token (padding could not be told apart)."""
    if pad in ids:
        raise ValueError(f"{where}: the pad token occurs inside a real input")


def segmenter_items(records: list[dict[str, Any]], split: str, vocab: Vocab,
                    spec: SolverSpec) -> list[SegItem]:
    """Encode segmenter records of one split."""
    rows = [r for r in records if r.get("split") == split]
    encoded = vocab.encode([r["question"] for r in rows], spec.max_problem_tokens)
    items = []
    for record, enc in zip(rows, encoded, strict=True):
        check_no_pad(enc.ids, vocab.pad, f"segmenter {record.get('id')}")
        question = record["question"]
        spans = [tuple(s) for s in record["spans"]]
        used = record.get("used")  # v2 data: one flag per span (all quantities)
        gold = [trim_span(question, s, e) for k, (s, e) in enumerate(spans)
                if used is None or used[k]]
        labels = bio_labels(vocab.tokenizer, question, spans, used)[: len(enc.ids)]
        items.append(SegItem(list(enc.ids), labels, list(enc.offsets), question,
                             [g for g in gold if g[1] > g[0]]))
    return items


def classifier_items(records: list[dict[str, Any]], split: str, vocab: Vocab,
                     spec: SolverSpec) -> list[PackedItem]:
    """Encode classifier records of one split, one packed item per problem."""
    op_index = {op: i for i, op in enumerate(classifier_labels(spec, reject=True))}
    grouped = group_by_question(records, split)
    questions = list(grouped)
    q_ids = vocab.encode(problem_prefixes(grouped, spec), spec.max_problem_tokens)
    items = []
    for question, enc in zip(questions, q_ids, strict=True):
        rows = grouped[question]
        suffixes = vocab.encode(
            [classifier_suffix(spec.templates, [tuple(g) for g in r["group"]]) for r in rows],
            spec.max_suffix_tokens,
        )
        blocks = [list(s.ids) for s in suffixes]
        for block in blocks + [enc.ids]:
            check_no_pad(block, vocab.pad, f"classifier {rows[0].get('id')}")
        items.append(PackedItem(list(enc.ids), blocks, [op_index[r["op"]] for r in rows]))
    return items


def extractor_items(records: list[dict[str, Any]], split: str, vocab: Vocab,
                    spec: SolverSpec) -> list[PackedItem]:
    """Encode extractor records of one split, one packed item per problem."""
    grouped = group_by_question(records, split)
    questions = list(grouped)
    q_ids = vocab.encode(problem_prefixes(grouped, spec), spec.max_problem_tokens)
    items = []
    for question, enc in zip(questions, q_ids, strict=True):
        rows = grouped[question]
        suffixes = vocab.encode(
            [extractor_suffix(spec.templates, [tuple(g) for g in r["group"]], r["op"])
             for r in rows],
            spec.max_suffix_tokens,
        )
        targets = vocab.encode([" " + r["target"] for r in rows])
        blocks, starts = [], []
        for suffix, target in zip(suffixes, targets, strict=True):
            check_no_pad(list(suffix.ids) + list(target.ids), vocab.pad,
                          f"extractor {rows[0].get('id')}")
            blocks.append(list(suffix.ids) + list(target.ids) + [vocab.eos])
            starts.append(len(suffix.ids))
        check_no_pad(enc.ids, vocab.pad, f"extractor {rows[0].get('id')}")
        items.append(PackedItem(list(enc.ids), blocks, starts,
                                [" ".join(r["target"].split()) for r in rows], starts))
    return items
