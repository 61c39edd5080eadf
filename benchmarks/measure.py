"""Timing of a pipeline Solver: warm-up, batched throughput, batch-1 latency, stages.

Imports no torch: the same code times the onnxruntime Solver and the PyTorch
baseline (a Solver with injected runners), so both are measured identically.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mycelium.runtime import search
from mycelium.runtime.results import SolveResult, Span
from mycelium.runtime.solver import Solver

Progress = Callable[[str], None]
SpanLists = Sequence[list[Span]]


def _quiet(_message: str) -> None:
    """The default progress sink: discard."""


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    """Consecutive batches of at most ``size`` items."""
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


def solve(
    solver: Solver, questions: list[str], spans: SpanLists | None = None
) -> list[SolveResult]:
    """``solver.solve``; with ``spans``, the model's segmenter still runs (timed, counted)
    but its spans are replaced by the given ones (``--spans-from``)."""
    if spans is None:
        return solver.solve(questions)
    solver.segment(questions)  # same work and Stats as a normal solve; output discarded
    return solver.solve(questions, spans=spans)


def spans_of(artifacts: str, questions: Sequence[str]) -> list[list[Span]]:
    """The spans another (trained) artifacts folder's segmenter marks in the questions."""
    helper = Solver.load(artifacts, "cpu")
    return [list(s) for s in helper.segment(list(questions))]


def _batches(questions: Sequence[str], spans: SpanLists | None, size: int):
    if spans is None:
        return [(batch, None) for batch in chunks(questions, size)]
    return list(zip(chunks(questions, size), chunks(spans, size), strict=True))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def timed_pass(
    solver: Solver, questions: Sequence[str], batch_size: int, spans: SpanLists | None = None
) -> dict[str, Any]:
    """Solve every question in batches of ``batch_size``; wall seconds, stats and answers."""
    batches = _batches(questions, spans, batch_size)
    solver.stats.reset()
    results = []
    start = time.perf_counter()
    for batch, given in batches:
        results.extend(solve(solver, batch, given))
    seconds = time.perf_counter() - start
    return {
        "batch_size": batch_size,
        "seconds": seconds,
        "problems_per_second": len(questions) / seconds if seconds > 0 else None,
        "stage_seconds": dict(solver.stats.seconds),
        "tokens": dict(solver.stats.tokens),
        "extractor_rows": solver.stats.extractor_rows,
        "results": results,
    }


def latency_pass(
    solver: Solver, questions: Sequence[str], spans: SpanLists | None = None
) -> dict[str, Any]:
    """Solve each question alone (batch 1); per-problem milliseconds and stats."""
    batches = _batches(questions, spans, 1)
    solver.stats.reset()
    latencies = []
    for batch, given in batches:
        start = time.perf_counter()
        solve(solver, batch, given)
        latencies.append((time.perf_counter() - start) * 1000.0)
    return {
        "latency_ms": latencies,
        "stage_seconds": dict(solver.stats.seconds),
        "tokens": dict(solver.stats.tokens),
    }


def per_problem(tokens: dict[str, int], problems: int) -> dict[str, float]:
    """Token positions per problem, per model and in total."""
    out = {name: count / problems for name, count in tokens.items()}
    out["total"] = sum(tokens.values()) / problems
    return out


def search_sizes(solver: Solver, results: Sequence[Any], extractor_rows: int
                 ) -> dict[str, float]:
    """Mean spans and unique span groups per problem (from the results), and the extractor
    decode rows the solver fed (``Stats.extractor_rows``: the (group, operation) readings
    above ``min_op_prob``, times their branches or beams) per problem."""
    spans = groups = 0
    for result in results:
        used = search.used_sets([span.used_prob for span in result.spans], solver.spec.search)
        spans += len(result.spans)
        groups += len(search.unique_groups(used, solver.spec.search))
    count = max(1, len(results))
    return {
        "spans_per_problem": spans / count,
        "groups_per_problem": groups / count,
        "extractor_rows_per_problem": extractor_rows / count,
    }


def profile_pass(
    solver: Solver, questions: Sequence[str], batch_size: int, spans: SpanLists | None = None,
    top: int = 30,
) -> str:
    """cProfile of one batched pass: the top functions by own time and by cumulative time."""
    batches = _batches(questions, spans, batch_size)
    profiler = cProfile.Profile()
    profiler.enable()
    for batch, given in batches:
        solve(solver, batch, given)
    profiler.disable()
    out = io.StringIO()
    for key in ("tottime", "cumulative"):
        out.write(f"== sorted by {key} ==\n")
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()


def measure_pipeline(
    solver: Solver,
    questions: Sequence[str],
    *,
    batch_size: int,
    sweep: Sequence[int] = (),
    warmup: int | None = None,
    latency_limit: int | None = None,
    profile: bool = False,
    spans: SpanLists | None = None,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Warm up, then time: batched passes (``batch_size`` and each ``sweep`` size) and
    batch-1 latency over the first ``latency_limit`` questions. Figures come from the
    timed passes only; answers from the ``batch_size`` pass. ``spans`` (one list per
    question) replaces the segmenter's output, see :func:`solve`.
    """
    questions = list(questions)
    if not questions:
        raise ValueError("no problems to measure")
    warm = questions[: max(1, warmup if warmup is not None else batch_size)]
    warm_spans = spans[: len(warm)] if spans is not None else None
    progress(f"warm-up: {len(warm)} problems batched, {min(2, len(warm))} alone")
    start = time.perf_counter()
    for batch, given in _batches(warm, warm_spans, batch_size):
        solve(solver, batch, given)
    for batch, given in _batches(warm, warm_spans, 1)[:2]:
        solve(solver, batch, given)
    warmup_seconds = time.perf_counter() - start

    progress(f"timed: {len(questions)} problems, batch {batch_size}")
    main = timed_pass(solver, questions, batch_size, spans)
    progress(f"  {main['problems_per_second']:.3g} problems/s")
    lat_questions = questions[: latency_limit or len(questions)]
    progress(f"timed: {len(lat_questions)} problems, batch 1 (latency)")
    lat_spans = spans[: len(lat_questions)] if spans is not None else None
    latency = latency_pass(solver, lat_questions, lat_spans)
    points = {batch_size: main}
    for size in sorted(set(sweep) - {batch_size, 1}):
        progress(f"timed sweep: batch {size}")
        points[size] = timed_pass(solver, questions, size, spans)
    sweep_rows = [
        {
            "batch_size": size,
            "problems": len(questions),
            "seconds": point["seconds"],
            "problems_per_second": point["problems_per_second"],
        }
        for size, point in points.items()
    ]
    total_ms = sum(latency["latency_ms"])
    if batch_size != 1:
        sweep_rows.append(
            {
                "batch_size": 1,
                "problems": len(lat_questions),
                "seconds": total_ms / 1000.0,
                "problems_per_second": len(lat_questions) / (total_ms / 1000.0),
            }
        )
    sweep_rows.sort(key=lambda row: row["batch_size"])
    results = main["results"]
    out: dict[str, Any] = {
        "problems": len(questions),
        "batch_size": batch_size,
        "warmup_problems": len(warm),
        "warmup_seconds": warmup_seconds,
        "seconds": main["seconds"],
        "problems_per_second": main["problems_per_second"],
        "latency_problems": len(lat_questions),
        "latency_ms": latency["latency_ms"],
        "latency_ms_p50": percentile(latency["latency_ms"], 50),
        "latency_ms_p95": percentile(latency["latency_ms"], 95),
        "latency_ms_mean": total_ms / len(lat_questions),
        "stage_seconds": main["stage_seconds"],
        "stage_seconds_batch1": latency["stage_seconds"],
        "tokens": main["tokens"],
        "tokens_per_problem": per_problem(main["tokens"], len(questions)),
        "sweep": sweep_rows,
        "answers": [r.answer_exact for r in results],
        "errors": sum(r.error is not None for r in results),
        **search_sizes(solver, results, main["extractor_rows"]),
    }
    if profile:
        progress("profiling one batched pass (cProfile; not timed)")
        out["profile"] = profile_pass(solver, questions, batch_size, spans)
    return out
