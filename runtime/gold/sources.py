"""Step 2 of the derivation (align.py): a source for every number literal of the gold
steps. An earlier step's result of equal exact value -> ``R``, else a text quantity of equal
value -> ``Q``, else a constant of the executor -> ``C``; :func:`alignments` yields the
possible assignments, preferred first."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

from mycelium.executor import DEFAULT_CONSTANTS as EXECUTOR_CONSTANTS
from mycelium.executor import Arg

from ..spec import DEFAULT_CONSTANTS
from .annotations import Leaf, RawStep, Ref
from .scan import TextQuantity

CONSTANTS: dict[Fraction, str] = {
    value: Arg.constant(value).to_text()
    for value in (Fraction(text) for text in DEFAULT_CONSTANTS)
    if value in EXECUTOR_CONSTANTS
}
PERCENT = Fraction(1, 100)  # "20%" reads as 20: the decimal .2 is Q * C(1/100) if allowed
MAX_ALIGNMENTS = 64  # alignments tried per problem


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
