"""From readings to an answer: execute the best-scored candidate programs, describe
them to the answer scorer, pick the answer and calibrate its confidence."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from mycelium.executor import Step, execute

from . import search
from .calibration import calibration_inputs
from .ranking import best_first
from .readings import distinct_readings
from .render import program_record
from .results import SolveResult, Span
from .scorer import Scored, pick_answer
from .spec import SearchSpec, SolverSpec, group_breadth
from .trace import SolveTrace, Variant
from .verifier import CandidateInfo, candidate_features, tail_agreement, with_pool_features

MAX_EXECUTIONS_FACTOR = 8  # executions tried per problem: this times max_candidates
# (candidate, readings) combinations walked per problem, this times max_candidates: a
# problem with many quantities can offer combinations whose steps never connect, which
# cost no execution, and the best-first walk over them would otherwise never end
MAX_WALKED_FACTOR = 1000


@dataclass
class Executed:
    """The valid candidates of one problem, best-scored first, and (when asked for) each
    one's features for the answer scorer."""

    valid: list[Scored]
    features: list[dict[str, float]]


def reading_options(variants: Mapping[tuple[int, ...], list[Variant]], spec: SearchSpec
                    ) -> dict[tuple[int, ...], list[Variant]]:
    """Each group's distinct parsed readings, best first, as many as the search keeps."""
    options: dict[tuple[int, ...], list[Variant]] = {}
    for group, found in variants.items():
        parsed = distinct_readings(found)
        if parsed:
            options[group] = parsed[: group_breadth(spec, group)[2]]
    return options


def execute_candidates(
    sets: list[search.UsedSet], options: dict[tuple[int, ...], list[Variant]],
    spans: list[Span], spec: SearchSpec, constants: frozenset[Fraction],
    no_learned_step: float | None, featured: bool,
) -> Executed:
    """Walk (candidate, readings) best first and execute each step order the references
    allow, until ``max_candidates`` are valid (or MAX_EXECUTIONS_FACTOR times that many
    executions); ``featured``: describe each valid one for the answer scorer."""
    quantities = [span.value for span in spans]
    used_probs = [span.used_prob for span in spans]
    out = Executed([], [])
    budget = spec.max_candidates
    executions = 0
    walked = itertools.islice(best_first(search.candidates(sets, spec), options),
                              budget * MAX_WALKED_FACTOR)
    for ranked in walked:
        if len(out.valid) >= budget or executions >= budget * MAX_EXECUTIONS_FACTOR:
            break
        tail = ranked.candidate.tail
        template = tail if tail not in (None, "LEARNED") else None
        # chunk steps, and a learned step, run in any order (search.chunk_orders)
        for order in search.chunk_orders(len(ranked.readings), spec):
            steps = [ranked.readings[i] for i in order]
            refs = [[a.index for a in v.args if a.kind == "result"] for v in steps]
            if not search.references_ok(refs, template, spec.connected):
                continue
            program = [Step(v.op, v.args) for v in steps]
            if template is not None:
                program.append(Step(template, ()))
            executions += 1
            result = execute(tuple(program), quantities, constants=constants,
                             connected=spec.connected)
            if not result.ok:
                continue
            order_score = ranked.score + spec.inversion_logprob * search.inversions(order)
            out.valid.append(Scored(order_score, result, ranked.index))
            if featured:
                info = CandidateInfo(
                    order_score,
                    tuple(v.logprob for v in steps),
                    ranked.candidate.used_logprob,
                    template is not None,
                    tail_agreement(no_learned_step, tail == "LEARNED"),
                    tuple(v.parts for v in steps),
                )
                out.features.append(candidate_features(info, result, quantities, used_probs))
    return out


def pick(executed: Executed, spec: SolverSpec
         ) -> tuple[Scored | None, float, list[list[float]]]:
    """The winning candidate and its confidence (the learned scorer and calibration when
    the artifacts carry them, else the pooled search scores), and the feature vectors."""
    valid = executed.valid
    vectors = with_pool_features(executed.features, [item.result for item in valid])
    scorer = spec.answer_scorer
    if scorer is None:
        best, confidence = pick_answer(valid, spec.answer_prior, spec.search.pool_temperature)
        return best, confidence, vectors
    logits = scorer.logits(vectors)
    learned = [replace(item, score=logit) for item, logit in zip(valid, logits, strict=True)]
    best, confidence = pick_answer(learned)
    calibration = spec.confidence_calibration
    if best is not None and calibration is not None:
        confidence = calibration.probability(calibration_inputs(
            logits, [item.result.value for item in valid], confidence))
    return best, confidence, vectors


def choose(
    id: Any, spans: list[Span], sets: list[search.UsedSet],
    variants: dict[tuple[int, ...], list[Variant]], spec: SolverSpec,
    constants: frozenset[Fraction], trace: bool = False,
    no_learned_step: float | None = None,
) -> SolveResult:
    """Enumerate candidates, execute the best-scored ones, pick the answer;
    ``no_learned_step``: the classifier's log-probability that the span-free group is
    no step (None without a reject label); ``trace``: keep what was read and executed."""
    featured = trace or spec.answer_scorer is not None
    executed = execute_candidates(sets, reading_options(variants, spec.search), spans,
                                  spec.search, constants, no_learned_step, featured)
    best, confidence, vectors = pick(executed, spec)
    debug = (
        SolveTrace(
            variants=dict(variants),
            used_sets=[used.spans for used in sets],
            valid_values=[item.result.value for item in executed.valid],
            candidate_features=vectors,
            candidate_programs=[program_record(item.result, spans) for item in executed.valid],
        )
        if trace
        else None
    )
    if best is None:
        return SolveResult(id=id, error="no valid candidate program", spans=spans, trace=debug)
    assert best.result.value is not None
    return SolveResult.from_value(
        id,
        best.result.value,
        program=program_record(best.result, spans),
        confidence=confidence,
        spans=spans,
        trace=debug,
    )
