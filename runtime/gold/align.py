"""Derive a search-reachable program from a GSM8K problem's annotated solution.

Pipeline (train/README.md has the full rules):

1. :func:`~mycelium.runtime.gold.annotations.parse_solution` turns the ``<<EXPR=RESULT>>``
   annotations into exact steps; the program is truncated after the last step whose result
   equals the final answer (after ``####``).
2. Every number literal (leaf) gets a source (:func:`~mycelium.runtime.gold.sources.alignments`):
   an earlier step's result of equal exact value -> ``R``, else a text quantity of equal
   value -> ``Q``, else a constant of the executor -> ``C``. Among equal candidates, one
   not consumed yet wins (the most recent result, the first span in text order). A leaf
   with no source at all makes the problem unaligned.
3. Steps the answer does not depend on are dropped. The problem's spans ``Q0..Qn-1`` are
   ALL its text quantities in text order (``Q<i>`` is the global rank); a span is *used*
   when the kept steps reference it.
4. The steps are reordered (:func:`~mycelium.runtime.gold.reorder.reorder`) to the runtime
   search's structure: chunk steps, each introducing the next 1..3 consecutive *used*
   spans (unused spans in between are skipped), then at most one span-free step (the
   learned tail) or, when several span-free steps remain, a bridging template of equal
   value.

When the preferred alignment does not fit, other alignments are tried (bounded, in
preference order) and the first that fits wins. Each derived program is read back through
the runtime's argument grammar and executed with :func:`mycelium.executor.execute`; it must
give the gold answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from mycelium.executor import Step, execute

from ..grammar import canonical_text, parse_args
from ..quantities import parse_quantity
from ..spec import SearchSpec
from .annotations import (
    AnnotationError,
    RawStep,
    final_answer_text,
    parse_solution,
)
from .reorder import Order, reorder
from .scan import TextQuantity, scan_quantities
from .sources import CONSTANTS, AlignedStep, alignments

SEARCH = SearchSpec()  # the search structure a program fits when ``derive`` names none


@dataclass
class ProgramStep:
    """One step of a derived program, in the runtime's argument grammar."""

    op: str
    args: list[str]  # "Q0", "R1", "C2"; [] for a template
    group: list[int]  # global span indices the step introduces; [] for a tail or template

    def to_json(self) -> dict:
        """JSON record of the step."""
        return {"op": self.op, "args": list(self.args), "group": list(self.group)}


@dataclass
class Derivation:
    """Everything derived from one problem."""

    reachable: bool = False
    reason: str | None = None
    parsed: bool = False  # annotations parsed and the answer is a step result
    aligned: bool = False  # and every operand has a source
    first_alignment: bool = False  # reachable with the preferred alignment
    spans: list[TextQuantity] = field(default_factory=list)  # all text quantities
    used: list[bool] | None = None  # per span: referenced by the program (None: unaligned)
    program: list[ProgramStep] = field(default_factory=list)
    answer: Fraction | None = None
    gold_steps: int = 0  # steps after truncation, before pruning
    tail: str | None = None  # None, "LEARNED" or a template name
    plain: bool = False  # derived with the solution's unmarked calculations merged in
    span_as_constant: bool = False  # a constant argument whose value is also a text number


def parse_answer(answer: str) -> Fraction | None:
    """The gold final answer after ``####`` (commas and currency read by parse_quantity)."""
    text = final_answer_text(answer)
    return None if text is None else parse_quantity(text)


def _program(
    steps: Sequence[AlignedStep], order: Order, used: list[int]
) -> list[ProgramStep]:
    position = {j: k for k, j in enumerate(order.order)}
    out = []
    for k, (j, ranks) in enumerate(zip(order.order, order.groups, strict=True)):
        group = [used[r] for r in ranks]  # global indices
        args = []
        for source in steps[j].args:
            if source.kind == "Q":
                args.append(f"Q{source.ref}")
            elif source.kind == "R":
                args.append(f"R{k - position[source.ref]}")
            else:
                args.append(CONSTANTS[source.value])
        out.append(ProgramStep(steps[j].op, canonical_order(steps[j].op, args), list(group)))
    if order.template is not None:
        out.append(ProgramStep(order.template, [], []))
    return out


def canonical_order(op: str, args: list[str]) -> list[str]:
    """Argument texts in the executor's canonical order for a commutative ``op`` (the
    annotation's order of ``3*4`` vs ``4*3`` is noise a model cannot predict)."""
    return canonical_text(op, " ".join(args)).split() if args else args


def to_executor(program: Sequence[ProgramStep]) -> tuple[Step, ...] | None:
    """The executor's form of a derived program, read back through the runtime's grammar
    parser (``None`` when some step's arguments are off-grammar, e.g. too many)."""
    out = []
    for step in program:
        args = parse_args(" ".join(step.args)) if step.args else ()
        if args is None:
            return None
        out.append(Step(step.op, tuple(args)))
    return tuple(out)


def _gold_order_program(
    steps: Sequence[AlignedStep], answer_step: int
) -> list[ProgramStep]:
    """An unreachable problem's aligned program in gold order (for inspection)."""
    kept = list(range(answer_step + 1))
    seen: set[int] = set()
    out = []
    for k in kept:
        args, group = [], []
        for source in steps[k].args:
            if source.kind == "Q":
                args.append(f"Q{source.ref}")
                if source.ref not in seen:
                    seen.add(source.ref)
                    group.append(source.ref)
            elif source.kind == "R":
                args.append(f"R{k - source.ref}")
            else:
                args.append(CONSTANTS[source.value])
        out.append(ProgramStep(steps[k].op, canonical_order(steps[k].op, args), group))
    return out


def _unaligned_kind(value: Fraction, quantities: Sequence[TextQuantity]) -> str:
    """Why a leaf has no source, roughly: a percent as a decimal, a fraction, an integer."""
    percent = any(q.text.endswith("%") and q.value == value * 100 for q in quantities)
    if percent or value == Fraction(1, 100):
        return "percent"
    return "integer" if value.denominator == 1 else "fraction"


def _derive_steps(
    out: Derivation,
    raw: list[RawStep],
    gold: Fraction,
    quantities: list[TextQuantity],
    constant_for_span: bool,
    search: SearchSpec | None = None,
) -> None:
    """Fill ``out`` from parsed steps: truncate, align, reorder (to ``search``'s
    structure), execute."""
    if not raw:
        out.reason = "no_annotation"
        return
    matches = [j for j, step in enumerate(raw) if step.value == gold]
    if not matches:
        out.reason = "answer_not_a_step_result"
        return
    out.parsed = True
    answer_step = matches[-1]
    raw = raw[: answer_step + 1]
    out.gold_steps = len(raw)
    first_reason = None
    try:
        for attempt, aligned in enumerate(alignments(raw, quantities, constant_for_span)):
            order, used, reason = reorder(aligned, answer_step, quantities,
                                          search if search is not None else SEARCH)
            if not out.aligned:  # the preferred alignment's used spans and gold program
                out.aligned = True
                out.spans = list(quantities)
                out.used = [i in used for i in range(len(quantities))]
                out.program = _gold_order_program(aligned, answer_step)
            if order is None:
                if first_reason is None:
                    first_reason = reason
                continue
            program = _program(aligned, order, used)
            executable = to_executor(program)
            if executable is None:
                first_reason = first_reason or "off_grammar_arguments"
                continue
            result = execute(executable, [q.value for q in quantities],
                             constants=CONSTANTS.keys())
            if not result.ok or result.value != gold:
                if first_reason is None:
                    first_reason = "execution_failed" if not result.ok else "execution_mismatch"
                continue
            out.reachable, out.first_alignment = True, attempt == 0
            span_values = {q.value for q in quantities}
            out.span_as_constant = any(
                a.kind == "C" and a.value in span_values
                for j in order.order
                for a in aligned[j].args
            )
            out.spans, out.program = list(quantities), program
            out.used = [i in used for i in range(len(quantities))]
            out.tail = order.template or ("LEARNED" if order.tail else None)
            return
    except LookupError as exc:
        out.reason = f"unaligned_operand:{_unaligned_kind(Fraction(str(exc)), quantities)}"
        return
    out.reason = first_reason or "unreachable"


def derive(
    question: str, answer: str, *, plain_fallback: bool = True, constant_for_span: bool = False,
    search: SearchSpec | None = None,
) -> Derivation:
    """Derive the spans and the search-reachable program of one problem (never raises).

    The annotations alone are tried first; when that is not reachable and ``plain_fallback``
    is set, the unmarked calculations of the solution text are merged in and tried again
    (``Derivation.plain`` tells which attempt won; the reason is the first attempt's).
    ``constant_for_span``: whether a leaf that matches a text number may be read as an
    equal constant instead when that is what makes the program fit the search (off by
    default: a value that is a text quantity always aligns to a ``Q``). ``search``: the
    runtime search whose structure the program must fit (its groups, orders and tails).
    """
    quantities = scan_quantities(question)
    out = Derivation(spans=list(quantities))
    gold = parse_answer(answer)
    out.answer = gold
    if gold is None:
        out.reason = "bad_final_answer"
        return out
    known = {q.value for q in quantities} | set(CONSTANTS)
    try:
        _derive_steps(out, parse_solution(answer, known.__contains__), gold, quantities,
                      constant_for_span, search)
    except AnnotationError as exc:
        out.reason = f"annotation:{exc.reason}"
    if out.reachable or not plain_fallback:
        return out
    retry = Derivation(answer=gold, plain=True, spans=list(quantities))
    try:
        _derive_steps(retry, parse_solution(answer, known.__contains__, plain=True), gold,
                      quantities, constant_for_span, search)
    except AnnotationError:
        return out
    return retry if retry.reachable else out
