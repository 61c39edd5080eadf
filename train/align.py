"""Derive a search-reachable program from a GSM8K problem's annotated solution.

Pipeline (train/README.md has the full rules):

1. :func:`~mycelium.train.annotations.parse_solution` turns the ``<<EXPR=RESULT>>``
   annotations into exact steps; the program is truncated after the last step whose result
   equals the final answer (after ``####``).
2. Every number literal (leaf) gets a source (:func:`alignments`): an earlier step's result
   of equal exact value -> ``R``, else a text quantity of equal value -> ``Q``, else a
   constant of the executor -> ``C``. Among equal candidates, one not consumed yet wins
   (the most recent result, the first span in text order). A leaf with no source at all
   makes the problem unaligned.
3. Steps the answer does not depend on are dropped. The problem's spans ``Q0..Qn-1`` are
   ALL its text quantities in text order (``Q<i>`` is the global rank); a span is *used*
   when the kept steps reference it.
4. The steps are reordered (:func:`_reorder`) to the runtime search's structure: chunk
   steps, each introducing the next 1..3 consecutive *used* spans (unused spans in between
   are skipped), then at most one span-free step (the learned tail) or, when several
   span-free steps remain, a bridging template of equal value.

When the preferred alignment does not fit, other alignments are tried (bounded, in
preference order) and the first that fits wins. Each derived program is read back through
the runtime's argument grammar and executed with :func:`mycelium.executor.execute`; it must
give the gold answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from mycelium.executor import DEFAULT_CONSTANTS as EXECUTOR_CONSTANTS
from mycelium.executor import Arg, Step, execute
from mycelium.runtime.grammar import canonical_text, parse_args
from mycelium.runtime.quantities import parse_quantity
from mycelium.runtime.spec import DEFAULT_CONSTANTS, SearchSpec

from .annotations import (
    AnnotationError,
    Leaf,
    RawStep,
    Ref,
    final_answer_text,
    parse_solution,
)
from .scan import TextQuantity, scan_quantities

CONSTANTS: dict[Fraction, str] = {
    value: Arg.constant(value).to_text()
    for value in (Fraction(text) for text in DEFAULT_CONSTANTS)
    if value in EXECUTOR_CONSTANTS
}
PERCENT = Fraction(1, 100)  # "20%" reads as 20: the decimal .2 is Q * C(1/100) if allowed
MAX_ALIGNMENTS = 64  # alignments tried per problem
MAX_ORDER_NODES = 2000  # reordering search nodes per alignment
SEARCH = SearchSpec()


@dataclass(frozen=True)
class Source:
    """Where an operand comes from: ``("Q", span)``, ``("R", step)`` or ``("C", value)``
    (``"P"``: a percent span, expanded to ``Q`` and ``C(1/100)`` in a product)."""

    kind: str
    ref: int = 0  # scanned quantity index (Q) or absolute gold step index (R)
    value: Fraction = Fraction(0)  # the constant (C)


@dataclass
class AlignedStep:
    """A gold step whose operands all have a source."""

    op: str
    args: list[Source]
    value: Fraction


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


def _leaf_options(
    leaf: Leaf, position: int, steps: Sequence[RawStep], quantities: Sequence[TextQuantity]
) -> tuple[list[Source], list[int], list[Source]]:
    """A leaf's sources: exact earlier results (most recent first), equal-valued spans,
    then the fallbacks (a constant, earlier results whose written value equals it, and
    in a product a percent span times the constant 1/100 when that constant exists)."""
    results = [Source("R", j) for j in range(position - 1, -1, -1) if steps[j].value == leaf.value]
    spans = [i for i, q in enumerate(quantities) if q.value == leaf.value]
    fallbacks = [Source("C", value=leaf.value)] if leaf.value in CONSTANTS else []
    fallbacks += [
        Source("R", j)
        for j in range(position - 1, -1, -1)
        if steps[j].written == leaf.value and steps[j].value != leaf.value
    ]
    if steps[position].op == "MUL" and PERCENT in CONSTANTS and not results and not spans:
        fallbacks += [
            Source("P", i)
            for i, q in enumerate(quantities)
            if q.text.endswith("%") and q.value == leaf.value / PERCENT
        ]
    return results, spans, fallbacks


def alignments(
    steps: Sequence[RawStep], quantities: Sequence[TextQuantity], constant_for_span: bool = False
) -> Iterator[list[AlignedStep]]:
    """Alignments of all leaves, preferred first (at most MAX_ALIGNMENTS).

    Per leaf, preferred first: an earlier result not consumed yet (most recent first), a span
    not used yet (text order), an already consumed result, an already used span, a constant,
    an earlier result whose written (rounded) value equals it. Alternatives keep the kind of
    the preferred source (another result, another span) or, with ``constant_for_span``, read
    a span's value as an equal constant. Raises ``LookupError`` (with the value) when a leaf
    has no source at all.
    """
    leaves: list[tuple[int, int]] = []
    options: list[tuple[list[Source], list[int], list[Source]]] = []
    for position, step in enumerate(steps):
        for slot, operand in enumerate(step.operands):
            if isinstance(operand, Leaf):
                found = _leaf_options(operand, position, steps, quantities)
                if not any(found):
                    raise LookupError(str(operand.value))
                leaves.append((position, slot))
                options.append(found)

    def choices(index: int, used: frozenset[tuple[str, int]]) -> list[Source]:
        results, spans, fallbacks = options[index]
        fresh = [Source("R", s.ref) for s in results if ("R", s.ref) not in used]
        fresh += [Source("Q", i) for i in spans if ("Q", i) not in used]
        consumed = [s for s in results if ("R", s.ref) in used]
        consumed += [Source("Q", i) for i in spans if ("Q", i) in used]
        preferred = (fresh + consumed + fallbacks)[0]
        # Alternatives never swap a result for a span or a constant (that would prune real
        # computation and pass a coincidence off as the solution): only another result for
        # a result, another span for a span, or a constant for a span.
        same_kind = [s for s in fresh + consumed if s.kind == preferred.kind]
        if preferred.kind == "Q" and constant_for_span:
            same_kind += [s for s in fallbacks if s.kind == "C"]
        if preferred.kind == "P":
            same_kind = [s for s in fallbacks if s.kind == "P"]
        return same_kind or [preferred]

    produced = 0
    chosen: list[Source] = []

    def walk(index: int, used: frozenset[tuple[str, int]]) -> Iterator[list[Source]]:
        nonlocal produced
        if index == len(leaves):
            produced += 1
            yield list(chosen)
            return
        for source in choices(index, used):
            if produced >= MAX_ALIGNMENTS:
                return
            chosen.append(source)
            key = (source.kind, source.ref)
            if source.kind == "P":
                key = ("Q", source.ref)
            yield from walk(index + 1, used | {key} if source.kind != "C" else used)
            chosen.pop()

    for sources in walk(0, frozenset()):
        by_leaf = dict(zip(leaves, sources, strict=True))
        out = []
        for position, step in enumerate(steps):
            args = []
            for slot, operand in enumerate(step.operands):
                source = Source("R", operand.step) if isinstance(operand, Ref) else by_leaf[
                    (position, slot)]
                if source.kind == "P":
                    args += [Source("Q", source.ref), Source("C", value=PERCENT)]
                else:
                    args.append(source)
            out.append(AlignedStep(step.op, args, step.value))
        yield out


def _template_value(name: str, results: Sequence[Fraction]) -> Fraction | None:
    if name == "ACC_ADD":
        return sum(results, Fraction(0))
    if name == "ACC_SUB":
        return results[0] - sum(results[1:], Fraction(0))
    if name == "AVG":
        return sum(results, Fraction(0)) / len(results)
    if name == "DERIVED_MUL":
        return results[-2] * results[-1]
    return None


@dataclass
class _Order:
    """The result of reordering: chunk steps with their groups, and how it ends."""

    order: list[int]  # kept gold step indices in program order (tail included)
    groups: list[list[int]]  # per entry of ``order``: ranks among the used spans
    template: str | None = None
    tail: bool = False


def _reorder(
    steps: Sequence[AlignedStep], answer_step: int, quantities: Sequence[TextQuantity],
    spec: SearchSpec | None = None,
) -> tuple[_Order | None, list[int], str]:
    """Fit the kept steps to ``spec``'s chunk structure; returns (order, used spans,
    failure).

    The used spans are global quantity indices in text order; the chunk structure runs
    over their ranks (unused spans in between are skipped). ``spec``: :data:`SEARCH` when
    None.
    """
    spec = spec if spec is not None else SEARCH
    keep: set[int] = set()
    stack = [answer_step]
    while stack:
        j = stack.pop()
        if j in keep:
            continue
        keep.add(j)
        stack.extend(a.ref for a in steps[j].args if a.kind == "R")
    kept = sorted(keep)
    used = sorted(
        {a.ref for j in kept for a in steps[j].args if a.kind == "Q"},
        key=lambda i: quantities[i].start,
    )
    rank = {span: r for r, span in enumerate(used)}
    n = len(used)
    if n > spec.max_spans:
        return None, used, "too_many_spans"
    deps = {j: {a.ref for a in steps[j].args if a.kind == "R"} for j in kept}
    spans_of = {j: {rank[a.ref] for a in steps[j].args if a.kind == "Q"} for j in kept}
    failure = {"depth": -1, "reason": "unreachable"}
    nodes = 0
    any_order = spec.permute_chunks > 1

    def fail(depth: int, reason: str) -> None:
        if depth > failure["depth"]:
            failure.update(depth=depth, reason=reason)

    def finish(placed: list[int], groups: list[list[int]]) -> _Order | None:
        learned_inside = sum(1 for group in groups if not group)
        remaining = [j for j in kept if j not in placed]  # gold order: dependencies first
        if remaining and len(remaining) <= spec.learned_steps - learned_inside:
            placed, groups = [*placed, *remaining], [*groups, *([[]] * len(remaining))]
            remaining, tail = [], True
        else:
            tail = False
        if any_order and len(groups) > spec.permute_chunks:
            # more steps than the search permutes: chunks in text order, learned steps last
            starts = [group[0] for group in groups if group]
            chunks = sum(1 for group in groups if group)
            if starts != sorted(starts) or any(not group for group in groups[:chunks]):
                fail(n, "order_conflict")
                return None
        if not remaining:
            return _Order(placed, groups, tail=tail or learned_inside > 0)
        if len(placed) >= 2 and not learned_inside:  # a candidate ends in one or the other
            results = [steps[j].value for j in placed]
            for name in spec.tail_templates:
                if _template_value(name, results) == steps[answer_step].value:
                    return _Order(placed, groups, template=name)
        fail(n + 1, "multi_step_tail")
        return None

    def search(
        placed: list[int], groups: list[list[int]], covered: frozenset[int]
    ) -> _Order | None:
        nonlocal nodes
        nodes += 1
        depth = len(covered)
        if nodes > MAX_ORDER_NODES:
            fail(depth, "order_search_budget")
            return None
        if depth == n:
            return finish(placed, groups)
        # text order only: the next chunk must start at the first span not introduced yet
        first_free = None if any_order else min(r for r in range(n) if r not in covered)
        owner_ready = False
        span_free_ready = False
        # steps whose new spans come first in the text are tried first: a text-order
        # program is preferred whenever one exists
        ready = [j for j in kept if j not in placed and deps[j] <= set(placed)]
        ready.sort(key=lambda j: min(spans_of[j] - covered, default=n))
        for j in ready:
            new = sorted(spans_of[j] - covered)
            if not new:
                span_free_ready = True
                if any_order and sum(1 for g in groups if not g) < spec.learned_steps:
                    # a learned (empty-group) step may run before the last chunk
                    found = search([*placed, j], [*groups, []], covered)
                    if found is not None:
                        return found
                continue
            if not any_order and new[0] != first_free:
                continue
            owner_ready = True
            if new[-1] - new[0] + 1 - len(new) > spec.group_gap:
                fail(depth, "noncontiguous_group")
                continue
            if len(new) > spec.max_group_size:
                fail(depth, "group_over_3")
                continue
            found = search([*placed, j], [*groups, new], covered | set(new))
            if found is not None:
                return found
        if not owner_ready:
            fail(depth, "span_free_step_before_spans" if span_free_ready else "order_conflict")
        return None

    found = search([], [], frozenset())
    return found, used, "" if found else str(failure["reason"])


def _program(
    steps: Sequence[AlignedStep], order: _Order, used: list[int]
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
            order, used, reason = _reorder(aligned, answer_step, quantities, search)
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
