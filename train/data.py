"""`mycelium-train data`: supervision for the three specialists from GSM8K annotations.

Reads a GSM8K jsonl (``question``, ``answer``), derives each problem's spans and
search-reachable program (:mod:`mycelium.train.align`), trains the tokenizer on the train
split, and writes the files documented in train/README.md.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mycelium.runtime.search import UsedSet, unique_groups
from mycelium.runtime.spec import DEFAULT_CONSTANTS, REJECT, SearchSpec, search_record

from .align import Derivation, derive
from .tokenizer import ARG_TOKENS, DEFAULT_VOCAB_SIZE, spans_align, train_tokenizer

DEV_EVERY = 10  # dev = 0-based line numbers divisible by 10 (data README)
SPLITS = ("train", "dev")


def split_of(line_number: int) -> str:
    """The fixed split of a 0-based line number."""
    return "dev" if line_number % DEV_EVERY == 0 else "train"


class DataError(ValueError):
    """A GSM8K file that cannot be read as problems (one line, naming the bad line)."""


def read_problems(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(0-based line number, record) of each non-empty line; a line that is not a JSON
    object with a string ``question`` and ``answer`` is refused (the fixed split counts
    lines, so a training set is never built from part of a file)."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number + 1}: not JSON ({exc.msg})") from None
            if not (isinstance(record, dict) and isinstance(record.get("question"), str)
                    and isinstance(record.get("answer"), str)):
                raise DataError(f"{path} line {number + 1}: needs string fields "
                                "'question' and 'answer'")
            yield number, record


def problem_record(number: int, question: str, derivation: Derivation) -> dict[str, Any]:
    """The ``problems.jsonl`` record of one problem."""
    answer = derivation.answer
    return {
        "id": number,
        "split": split_of(number),
        "question": question,
        "aligned": derivation.aligned,
        "reachable": derivation.reachable,
        "reason": derivation.reason,
        "spans": [
            {"start": s.start, "end": s.end, "text": s.text, "value": str(s.value),
             "used": None if derivation.used is None else derivation.used[i]}
            for i, s in enumerate(derivation.spans)
        ],
        "program": [step.to_json() for step in derivation.program],
        "answer": None if answer is None else str(answer),
    }


def step_records(record: dict[str, Any]) -> Iterator[tuple[dict, dict]]:
    """(classifier, extractor) records of an aligned problem's non-template steps.

    For a reachable problem, the steps of its search-ordered program; for an aligned but
    unreachable one, the steps of its gold-order program (each step with the spans it
    introduces, in text order): the same (group, operation, arguments) readings, which the
    step-local classifier and extractor learn from although the search cannot chain them.
    ``reachable`` on each record tells which.
    """
    texts = [span["text"] for span in record["spans"]]
    for step in record["program"]:
        if not step["args"]:  # a bridging template: no model call
            continue
        base = {
            "id": record["id"],
            "split": record["split"],
            "question": record["question"],
            "spans": [[span["start"], span["end"]] for span in record["spans"]],
            "group": [[index, texts[index]] for index in sorted(step["group"])],
            "op": step["op"],
            "reachable": bool(record["reachable"]),
        }
        yield base, {**base, "target": " ".join(step["args"])}


def reject_used_sets(flags: list[bool], flips: bool) -> list[UsedSet]:
    """The gold used set and, with ``flips``, every set one quantity away from it (a span
    added or dropped): the sets the runtime also tries when the segmenter is unsure."""
    sets = [UsedSet(tuple(i for i, used in enumerate(flags) if used), 0.0)]
    for flip in range(len(flags) if flips else 0):
        flipped = [used != (i == flip) for i, used in enumerate(flags)]
        if any(flipped):
            sets.append(UsedSet(tuple(i for i, used in enumerate(flipped) if used), 0.0))
    return sets


def reject_records(record: dict[str, Any], search: SearchSpec | None = None,
                   flips: bool = False) -> Iterator[dict]:
    """Classifier records labelled ``REJECT`` for a reachable problem: every group the
    runtime search forms over the gold used spans (``search.unique_groups``, the empty
    group included) that is no step of the gold program; with ``flips``, also over the
    used sets one quantity away (:func:`reject_used_sets`)."""
    flags = [bool(span["used"]) for span in record["spans"]]
    gold = {tuple(sorted(step["group"])) for step in record["program"] if step["args"]}
    texts = [span["text"] for span in record["spans"]]
    offsets = [[span["start"], span["end"]] for span in record["spans"]]
    for group in unique_groups(reject_used_sets(flags, flips), search or SearchSpec()):
        if group not in gold:
            yield {"id": record["id"], "split": record["split"],
                   "question": record["question"], "spans": offsets,
                   "group": [[index, texts[index]] for index in group], "op": REJECT,
                   "reachable": True}


def _new_stats() -> dict[str, Any]:
    return {
        "problems": 0, "parsed": 0, "aligned": 0, "reachable": 0,
        "reachable_first_alignment": 0, "reachable_with_unmarked_calculations": 0,
        "reachable_using_span_values_as_constants": 0, "reachable_without_span_constants": 0,
        "reasons": Counter(), "gold_steps": Counter(),
        "program_steps": Counter(), "spans": Counter(), "used_spans": Counter(),
        "endings": Counter(),
        "arg_sources": Counter(), "constants": Counter(), "ops": Counter(),
        "spans_not_on_token_bounds": 0, "segmenter": 0, "step_records": 0,
        "reject_records": 0,
        "aligned_quantities": 0, "aligned_quantities_used": 0,
        "reachable_quantities": 0, "reachable_quantities_used": 0,
    }


def _add(
    stats: dict[str, Any], derivation: Derivation, record: dict[str, Any], strict: bool
) -> None:
    stats["problems"] += 1
    stats["reachable_without_span_constants"] += strict
    stats["parsed"] += derivation.parsed
    stats["aligned"] += derivation.aligned
    if derivation.parsed:
        stats["gold_steps"][derivation.gold_steps] += 1
    if derivation.used is not None:
        stats["aligned_quantities"] += len(derivation.used)
        stats["aligned_quantities_used"] += sum(derivation.used)
        if derivation.reachable:
            stats["reachable_quantities"] += len(derivation.used)
            stats["reachable_quantities_used"] += sum(derivation.used)
    if not derivation.reachable:
        stats["reasons"][derivation.reason or "unknown"] += 1
        return
    stats["reachable"] += 1
    stats["reachable_first_alignment"] += derivation.first_alignment
    stats["reachable_with_unmarked_calculations"] += derivation.plain
    stats["reachable_using_span_values_as_constants"] += derivation.span_as_constant
    stats["program_steps"][len(record["program"])] += 1
    stats["spans"][len(record["spans"])] += 1
    stats["used_spans"][sum(bool(s["used"]) for s in record["spans"])] += 1
    stats["endings"][derivation.tail or "none"] += 1
    for step in record["program"]:
        stats["ops"][step["op"]] += 1
        for arg in step["args"]:
            stats["arg_sources"][arg[0]] += 1
            if arg[0] == "C":
                stats["constants"][arg] += 1


def _finish(stats: dict[str, Any]) -> dict[str, Any]:
    total = max(stats["problems"], 1)
    out = dict(stats)
    for key in ("parsed", "aligned", "reachable", "reachable_first_alignment",
                "reachable_without_span_constants"):
        out[f"{key}_fraction"] = round(stats[key] / total, 4)
    for key in ("aligned", "reachable"):
        out[f"{key}_quantities_used_fraction"] = round(
            stats[f"{key}_quantities_used"] / max(stats[f"{key}_quantities"], 1), 4)
    for key, value in stats.items():
        if isinstance(value, Counter):
            items = sorted(value.items(), key=lambda kv: (-kv[1], str(kv[0])))
            if key in ("gold_steps", "program_steps", "spans", "used_spans"):
                items = sorted(value.items())
            out[key] = {str(k): v for k, v in items}
    return out


def build(
    data: Path,
    out: Path,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    span_constants: bool = False,
    unreachable_steps: bool = True,
    reject_groups: bool = False,
    search: SearchSpec | None = None,
    reject_flips: bool = False,
) -> dict[str, Any]:
    """Derive everything from ``data`` into folder ``out``; returns the coverage figures.

    ``span_constants``: see ``constant_for_span`` of :func:`mycelium.train.align.derive`;
    the coverage also says how many problems stay reachable without it.
    ``unreachable_steps``: also write classifier/extractor records for the steps of aligned
    but unreachable *train* problems (dev records stay reachable-only, so dev figures keep
    measuring what the search can use).
    ``reject_groups``: also write classifier records labelled ``REJECT`` for the groups
    of reachable problems that are no step (:func:`reject_records`); ``reject_flips``:
    also those of the used sets one quantity away from the gold one.
    ``search``: the runtime search whose structure the programs fit (default settings when
    None; e.g. ``group_gap`` 1 lets a group skip a span another group reads).
    """
    search = search or SearchSpec()
    out.mkdir(parents=True, exist_ok=True)
    records = []
    derivations = []
    strict = []
    corpus = []
    for number, problem in read_problems(data):
        question, answer = str(problem["question"]), str(problem["answer"])
        derivation = derive(question, answer, constant_for_span=span_constants,
                            search=search)
        records.append(problem_record(number, question, derivation))
        derivations.append(derivation)
        if derivation.span_as_constant:
            derivation_strict = derive(question, answer, constant_for_span=False,
                                       search=search)
            strict.append(derivation_strict.reachable)
        else:
            strict.append(derivation.reachable)
        if split_of(number) == "train":
            corpus.extend((question, answer))
    tokenizer = train_tokenizer(corpus, vocab_size)
    tokenizer.save(str(out / "tokenizer.json"))

    stats = {split: _new_stats() for split in SPLITS}
    with (out / "problems.jsonl").open("w", encoding="utf-8") as problems, \
            (out / "segmenter.jsonl").open("w", encoding="utf-8") as segmenter, \
            (out / "classifier.jsonl").open("w", encoding="utf-8") as classifier, \
            (out / "extractor.jsonl").open("w", encoding="utf-8") as extractor:
        for record, derivation, reachable_strict in zip(records, derivations, strict, strict=True):
            split_stats = stats[record["split"]]
            _add(split_stats, derivation, record, reachable_strict)
            problems.write(json.dumps(record, ensure_ascii=False) + "\n")
            if not record["aligned"]:
                continue
            spans = [[s["start"], s["end"]] for s in record["spans"]]
            if not spans_align(tokenizer, record["question"], spans):
                split_stats["spans_not_on_token_bounds"] += 1
            split_stats["segmenter"] += 1
            segmenter.write(json.dumps(
                {"id": record["id"], "split": record["split"], "question": record["question"],
                 "spans": spans, "used": [s["used"] for s in record["spans"]]},
                ensure_ascii=False) + "\n")
            steps_wanted = record["reachable"] or (
                unreachable_steps and record["split"] == "train"
            )
            if not steps_wanted:
                continue
            for cls_record, ext_record in step_records(record):
                split_stats["step_records"] += 1
                classifier.write(json.dumps(cls_record, ensure_ascii=False) + "\n")
                extractor.write(json.dumps(ext_record, ensure_ascii=False) + "\n")
            if reject_groups and record["reachable"]:
                for reject in reject_records(record, search, reject_flips):
                    split_stats["reject_records"] += 1
                    classifier.write(json.dumps(reject, ensure_ascii=False) + "\n")

    coverage = {
        "data": str(data),
        "span_constants": span_constants,
        "unreachable_steps": unreachable_steps,
        "reject_groups": reject_groups,
        "reject_flips": reject_flips,
        "search": search_record(search, changed_only=True),  # the structure, where not default
        "splits": {split: _finish(stats[split]) for split in SPLITS},
        "tokenizer": {
            "vocab_size": tokenizer.get_vocab_size(),
            "arg_tokens": list(ARG_TOKENS),
            "constants": list(DEFAULT_CONSTANTS),
        },
    }
    (out / "coverage.json").write_text(json.dumps(coverage, indent=2) + "\n", encoding="utf-8")
    return coverage
