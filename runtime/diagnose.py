"""Error attribution: which stage lost each problem (development tool).

Gold is read from the records only *after* the solver has answered, and only to
attribute. Where a record carries GSM8K's annotated solution, its gold program
(spans, groups, operations, arguments) is derived by :mod:`mycelium.runtime.gold`
(pure Python, shared with training), which lets a loss be pinned to a stage:

- ``segmentation``: the predicted quantities differ from the gold ones, or no used
  set the search tried is the gold program's;
- ``no_valid_candidate``: no candidate program executed;
- ``wrong_operation``: a gold group's top operation is not the gold one;
- ``wrong_arguments``: the operation is right but the extracted arguments are not;
- ``scorer_picked_wrong``: some valid candidate reached the gold answer, another won;
- ``outside_search_space``: the gold program is not reachable by the search design
  (the summary counts why: ``outside_search_space_reasons``, the alignment's reasons
  such as ``multi_step_tail`` or ``noncontiguous_group``);
- ``unattributed``: the gold program could not be derived (no usable annotation);
- ``wrong_program`` (a program writer's set only): valid programs were written, none
  reaching the gold value. For a writer, ``scorer_picked_wrong`` means a finished program
  reached the gold value but another value's programs held more probability, and
  ``segmentation`` that its quantities differ from the gold ones.

The summary's ``by_confidence`` says how far the solver's confidence can be trusted
(``calibration.confidence_report``: accuracy per confidence band, the accuracy of the most
confident share of the problems, the expected calibration error).

A separate *oracle* pass feeds the gold spans to the rest of the pipeline; its
accuracy is labelled as an oracle figure and never mixed with the real one. For that
pass, :func:`gold_reading_reach` also says how far the models' readings came towards the
gold program (the gold value among the executed candidates; every gold step kept but the
program not executed; a gold step read but cut by ``readings_per_group``; the operation
read but not its arguments; the operation not read), which separates what a wider or
better-ordered search could win from what only better specialists can.
"""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

from mycelium.executor import format_fraction

from .calibration import confidence_report
from .compare import compare_reports, wilson_interval
from .errors import InputError
from .gold import Derivation, derive
from .grammar import canonical_text
from .quantities import parse_quantity
from .readings import distinct_readings
from .records import parse_line
from .results import SolveResult, Span
from .spec import SearchSpec, group_breadth

READING_REACH = (
    "gold_value_among_candidates",  # a valid candidate reached the gold value
    "gold_readings_kept",  # every gold step among its group's kept readings, not executed
    "gold_reading_cut",  # a gold step read, but below the readings the search keeps
    "arguments_not_read",  # the gold operation read for a group, not its arguments
    "operation_not_read",  # a gold step's operation not among its group's readings
    "gold_value_not_written",  # a program writer: no finished program reached the gold value
)
CATEGORIES = (
    "correct",
    "segmentation",
    "no_valid_candidate",
    "wrong_operation",
    "wrong_arguments",
    "scorer_picked_wrong",
    "outside_search_space",
    "unattributed",
    "wrong_program",  # a program writer: its finished programs, none reaching the gold value
)


def gold_value(record: dict[str, Any]) -> Fraction | None:
    """The gold answer of a record: `gold`, or a GSM8K `answer` after '####'."""
    if "gold" in record:
        return parse_quantity(str(record["gold"]))
    answer = record.get("answer")
    if isinstance(answer, str) and "####" in answer:
        return parse_quantity(answer.rsplit("####", 1)[1].strip())
    return None


def _derive(question: str, record: dict[str, Any], search: SearchSpec) -> Derivation | None:
    """The gold program of a record, fitted to the solver's ``search`` structure."""
    answer = record.get("answer")
    if not isinstance(answer, str) or "<<" not in answer:
        return None
    return derive(question, answer, search=search)


def _best_readings(result: SolveResult, group: tuple[int, ...], count: int
                   ) -> list[tuple[str, str]]:
    """The ``count`` best (operation, argument text) readings the models gave a group."""
    variants = result.trace.variants.get(group, []) if result.trace is not None else []
    best = sorted(variants, key=lambda v: -v.logprob)[:count]
    return [(v.op, " ".join(v.text.split())) for v in best]


def attribute(result: SolveResult, gold: Fraction, derivation: Derivation | None) -> str:
    """The stage that lost this problem (or ``correct``)."""
    if result.answer_exact is not None and result.answer_exact == format_fraction(gold):
        return "correct"
    if result.trace is not None and result.trace.programs_written:
        return _attribute_written(result, gold, derivation)
    if derivation is not None and derivation.reachable:
        predicted = [(s.start, s.end) for s in result.spans]
        expected = [(s.start, s.end) for s in derivation.spans]
        if predicted != expected:
            return "segmentation"  # a quantity missed, added or cut differently
        gold_used = tuple(i for i, used in enumerate(_used_flags(derivation)) if used)
        if result.trace is not None and gold_used not in result.trace.used_sets:
            return "segmentation"  # quantities right, but no used set tried is the gold one
    if result.trace is not None and gold in result.trace.valid_values:
        return "scorer_picked_wrong"
    if result.error and "no valid candidate" in result.error and (
        derivation is None or not derivation.reachable
    ):
        return "no_valid_candidate"
    if derivation is None or not derivation.parsed:
        return "no_valid_candidate" if result.error else "unattributed"
    if not derivation.reachable:
        return "outside_search_space"
    steps_per_group = Counter(tuple(step.group) for step in derivation.program if step.args)
    for step in derivation.program:
        if not step.args:  # a template tail: no model reading
            continue
        group = tuple(step.group)  # several learned steps share the empty group: each one
        readings = _best_readings(result, group, steps_per_group[group])  # among its best
        if all(op != step.op for op, _ in readings):
            return "wrong_operation"
        if not any(op == step.op and _same_arguments(op, text, step.args)
                   for op, text in readings):
            return "wrong_arguments"
    return "no_valid_candidate" if result.error else "scorer_picked_wrong"


def _attribute_written(result: SolveResult, gold: Fraction, derivation: Derivation | None
                       ) -> str:
    """A program writer's loss: its quantities differ from the gold ones, a finished program
    reached the gold value but another value won the pooled pick, no program was valid, or
    none of its programs reached the gold value (it has no span groups or readings)."""
    if derivation is not None and derivation.reachable and (
            [(s.start, s.end) for s in result.spans]
            != [(s.start, s.end) for s in derivation.spans]):
        return "segmentation"
    if gold in result.trace.valid_values:  # type: ignore[union-attr]
        return "scorer_picked_wrong"
    return "no_valid_candidate" if result.error else "wrong_program"


def gold_reading_reach(result: SolveResult, gold: Fraction, derivation: Derivation,
                       search: SearchSpec) -> str:
    """How far the readings came towards a reachable gold program (:data:`READING_REACH`):
    the gold value among the valid candidates, else the worst of the gold steps."""
    if result.trace is not None and gold in result.trace.valid_values:
        return READING_REACH[0]
    if result.trace is not None and result.trace.programs_written:
        return "gold_value_not_written"
    variants = result.trace.variants if result.trace is not None else {}
    worst = READING_REACH.index("gold_readings_kept")
    for step in derivation.program:
        if step.args:  # a template tail has no model reading
            found = variants.get(tuple(step.group), [])
            worst = max(worst, READING_REACH.index(_step_reach(step, found, search)))
    return READING_REACH[worst]


def _step_reach(step: Any, found: list, search: SearchSpec) -> str:
    """Where one gold step stands among its group's readings (best first, distinct)."""
    readings = distinct_readings(found)
    same_op = [k for k, v in enumerate(readings) if v.op == step.op]
    if not same_op:
        return "operation_not_read"
    rank = next((k for k in same_op if _same_arguments(step.op, readings[k].text, step.args)),
                None)
    if rank is None:
        return "arguments_not_read"
    kept = group_breadth(search, tuple(step.group))[2]
    return "gold_reading_cut" if rank >= kept else "gold_readings_kept"


def _same_arguments(op: str, text: str | None, gold: list[str]) -> bool:
    """Whether the model's argument text is the gold step (any order for ADD and MUL)."""
    return text is not None and canonical_text(op, text) == canonical_text(op, " ".join(gold))


def _used_flags(derivation: Derivation) -> list[bool]:
    used = getattr(derivation, "used", None)
    return list(used) if used is not None else [True] * len(derivation.spans)


def _gold_spans(derivation: Derivation) -> list[Span]:
    """The gold quantities, read as used exactly when the gold program uses them."""
    return [
        Span(s.start, s.end, s.text, s.value, 1.0 if used else 0.0)
        for s, used in zip(derivation.spans, _used_flags(derivation), strict=True)
    ]


def run_diagnosis(
    solver: Any, input_path: str, report_path: str, *, limit: int | None = None,
    batch_size: int = 16, baseline: dict[str, Any] | None = None,
    baseline_name: str | None = None, oracle: bool = True,
) -> dict[str, Any]:
    """Solve, attribute every problem, write a JSON report and return its summary;
    ``baseline``: an earlier report of the same problems to compare with (paired);
    ``oracle``: also run the gold-span oracle pass (``False``: its figures stay empty)."""
    rows = _gold_rows(input_path, limit)
    if not rows:
        raise InputError(f"no record of {input_path!r} carries a question and a gold answer")
    counts: Counter[str] = Counter()
    reach: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    oracle_correct = oracle_total = expressible = 0
    per_problem = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        results = solver.solve([q for _, q, _, _ in chunk], [i for i, _, _, _ in chunk],
                               trace=True)
        derivations = [_derive(q, raw, solver.spec.search) for _, q, _, raw in chunk]
        reachable = [k for k, d in enumerate(derivations) if d is not None and d.reachable]
        expressible += len(reachable)
        oracle_by = {}
        if reachable and oracle:
            oracle_results = solver.solve(
                [chunk[k][1] for k in reachable], [chunk[k][0] for k in reachable],
                spans=[_gold_spans(derivations[k]) for k in reachable], trace=True,
            )
            oracle_by = dict(zip(reachable, oracle_results, strict=True))
        for k, ((record_id, _, gold, _), result) in enumerate(
            zip(chunk, results, strict=True)
        ):
            stage = attribute(result, gold, derivations[k])
            counts[stage] += 1
            entry = {"id": record_id, "stage": stage, "gold": format_fraction(gold),
                     "answer": result.answer_exact, "error": result.error,
                     "confidence": round(result.confidence, 6)}
            if stage == "outside_search_space":  # why the search cannot express it
                entry["unreachable_reason"] = derivations[k].reason or "unreachable"
                outside[entry["unreachable_reason"]] += 1
            if k in oracle_by:
                oracle_total += 1
                oracle_stage = attribute(oracle_by[k], gold, derivations[k])
                oracle_correct += oracle_stage == "correct"
                entry["oracle_gold_spans_stage"] = oracle_stage
                counts["oracle:" + oracle_stage] += 1
                entry["oracle_gold_readings"] = gold_reading_reach(
                    oracle_by[k], gold, derivations[k], solver.spec.search)
                reach[entry["oracle_gold_readings"]] += 1
            per_problem.append(entry)
    total = len(rows)
    low, high = wilson_interval(counts["correct"], total)
    summary = {
        "problems": total,
        "accuracy": counts["correct"] / total,
        "accuracy_95ci": [round(low, 4), round(high, 4)],
        "lost_by_stage": {name: counts[name] for name in CATEGORIES},
        "outside_search_space_reasons": dict(outside.most_common()),
        "oracle_gold_spans": {
            "label": "ORACLE: gold spans fed to the pipeline (reachable problems only)",
            "problems": oracle_total,
            "accuracy": oracle_correct / oracle_total if oracle_total else None,
            "lost_by_stage": {name: counts["oracle:" + name] for name in CATEGORIES},
            "gold_readings": {name: reach[name] for name in READING_REACH},
        },
        "search_space_ceiling": {
            "label": "ORACLE: share of problems whose gold program the search can express",
            "value": expressible / total,
        },
        "answer_scorer": ("program writer" if solver.manifest.writes_programs
                          else "learned" if solver.spec.answer_scorer is not None
                          else "default"),
        "by_confidence": confidence_report([e["confidence"] for e in per_problem],
                                           [e["stage"] == "correct" for e in per_problem]),
    }
    if baseline is not None:
        summary["versus_baseline"] = {
            "baseline": baseline_name, **compare_reports(baseline, {"problems": per_problem})
        }
    Path(report_path).write_text(
        json.dumps({"summary": summary, "problems": per_problem}, indent=2) + "\n",
        encoding="utf-8",
    )
    return summary


def _gold_rows(path: str, limit: int | None) -> list[tuple[Any, str, Fraction, dict]]:
    """(id, question, gold, record) of the valid records that carry a gold answer."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read input {path!r}: {exc.strerror}") from None
    rows = []
    with handle:
        for line, raw in enumerate(handle, start=1):
            record = parse_line(raw.rstrip(b"\r\n"), line)
            if record is None or record.question is None:
                continue
            data = json.loads(raw)
            gold = gold_value(data)
            if gold is not None:
                rows.append((record.id, record.question, gold, data))
            if limit is not None and len(rows) >= limit:
                break
    return rows
