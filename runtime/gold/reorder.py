"""Step 4 of the derivation (align.py): the kept gold steps reordered to the runtime
search's structure (chunk steps over consecutive used spans, then at most one learned
span-free step or a bridging template of equal value)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from ..spec import SearchSpec
from .scan import TextQuantity
from .sources import AlignedStep

MAX_ORDER_NODES = 2000  # reordering search nodes per alignment


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
class Order:
    """The result of reordering: chunk steps with their groups, and how it ends."""

    order: list[int]  # kept gold step indices in program order (tail included)
    groups: list[list[int]]  # per entry of ``order``: ranks among the used spans
    template: str | None = None
    tail: bool = False


def reorder(
    steps: Sequence[AlignedStep], answer_step: int, quantities: Sequence[TextQuantity],
    spec: SearchSpec,
) -> tuple[Order | None, list[int], str]:
    """Fit the kept steps to ``spec``'s chunk structure; returns (order, used spans,
    failure).

    The used spans are global quantity indices in text order; the chunk structure runs
    over their ranks (unused spans in between are skipped).
    """
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

    def finish(placed: list[int], groups: list[list[int]]) -> Order | None:
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
            return Order(placed, groups, tail=tail or learned_inside > 0)
        if len(placed) >= 2 and not learned_inside:  # a candidate ends in one or the other
            results = [steps[j].value for j in placed]
            for name in spec.tail_templates:
                if _template_value(name, results) == steps[answer_step].value:
                    return Order(placed, groups, template=name)
        fail(n + 1, "multi_step_tail")
        return None

    def search(
        placed: list[int], groups: list[list[int]], covered: frozenset[int]
    ) -> Order | None:
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
