"""`mycelium-train scorer`: collect (or read) the search's candidates, fit the answer
scorer (``scorer.fit``) and the confidence calibration (``confidence``), report, and store
them in the artifacts' manifest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mycelium.runtime.calibration import ConfidenceCalibration
from mycelium.runtime.manifest import load_manifest, write_manifest
from mycelium.runtime.solver import Solver
from mycelium.runtime.spec import SearchSpec, search_record
from mycelium.runtime.verifier import AnswerScorer

from .confidence import calibration_figures, fit_calibration, picks
from .scorer import (
    ProblemCandidates,
    collect,
    cross_fit,
    fit,
    held_out_logits,
    pick_accuracy,
    read_cache,
    write_cache,
)


def candidates(
    solver: Any, data: Path, split: str, cache: Path | None, limit: int | None,
    log: Callable[[str], None],
) -> list[ProblemCandidates]:
    """The search's candidates for ``split``'s problems: read from ``cache`` when it exists,
    else collected with ``solver`` (and written to ``cache`` when given)."""
    if cache is not None and cache.exists():
        log(f"reading candidates from {cache}")
        return read_cache(cache)
    problems = collect(solver, data, split, limit=limit, log=log)
    if cache is not None:
        write_cache(problems, cache)
    return problems


def store_scorer(artifacts: Path, scorer: AnswerScorer,
                 search: SearchSpec | None = None,
                 calibration: ConfidenceCalibration | None = None) -> Path:
    """Write ``scorer`` into the artifacts' manifest as ``mycelium.answer_scorer``, and
    ``search`` (the settings its candidates were collected under) as ``mycelium.search``:
    a scorer serves the search it was fitted on. ``calibration`` (fitted on this scorer's
    held-out picks) becomes ``mycelium.confidence_calibration``; without one, a stored
    calibration (of an earlier scorer) is removed. The updated section is validated as the
    runtime loads it (``Manifest.with_mycelium``): nothing is written when it would not
    load."""
    manifest = load_manifest(artifacts, verify=False)
    mycelium = {**manifest.mycelium, "answer_scorer": scorer.to_dict()}
    if calibration is not None:
        mycelium["confidence_calibration"] = calibration.to_dict()
    else:
        mycelium.pop("confidence_calibration", None)
    if search is not None:
        mycelium["search"] = search_record(search)
    return write_manifest(manifest.with_mycelium(mycelium), artifacts)


def fit_scorer_command(
    artifacts: Path, data: Path, split: str, eval_split: str | None, cache: Path | None,
    limit: int | None, l2: float, search: Sequence[str], write: bool,
    log: Callable[[str], None] = print, folds: int = 0, hidden: int = 0, members: int = 1,
    calibrate: bool = False,
) -> AnswerScorer:
    """`mycelium-train scorer`: collect (or read) candidates, fit, report, maybe store;
    ``calibrate``: also fit the confidence calibration on the held-out picks of the
    ``folds``-fold cross-fit."""
    if calibrate and folds < 2:
        raise ValueError("--calibrate fits on held-out picks: it needs --folds 2 or more")
    solver = Solver.load(artifacts, search=search)
    solver.spec = replace(solver.spec, answer_scorer=None)  # collect with the default ranking
    default = {"prior": solver.spec.answer_prior,
               "temperature": solver.spec.search.pool_temperature}
    problems = candidates(solver, data, split, cache, limit, log)
    calibration = None
    if folds > 1:
        logits = held_out_logits(problems, folds, l2, hidden, members)
        report = cross_fit(problems, folds, l2, hidden=hidden, members=members,
                           logits=logits, **default)
        log(f"{split}, {folds}-fold cross-fitted: {report}")
        if calibrate:
            rows = picks(problems, logits)
            calibration = fit_calibration(rows)
            log(f"{split}, confidence of the held-out picks: "
                f"{calibration_figures(rows, calibration, len(problems) - len(rows))}")
    scorer = fit(problems, l2=l2, hidden=hidden, members=members)
    log(f"{split} (fitted on): default {pick_accuracy(problems, None, **default)}, "
        f"learned {pick_accuracy(problems, scorer)}")
    if eval_split is not None:
        held = collect(solver, data, eval_split, limit=limit, log=log)
        log(f"{eval_split} (held out): default {pick_accuracy(held, None, **default)}, "
            f"learned {pick_accuracy(held, scorer)}")
        if calibration is not None:
            rows = picks(held, [scorer.logits(p.vectors) for p in held])
            log(f"{eval_split} (held out), confidence: "
                f"{calibration_figures(rows, calibration, len(held) - len(rows))}")
    log("weights: " + ", ".join(f"{n} {w:+.2f}" for n, w in zip(scorer.features,
                                                               scorer.weights, strict=True)))
    if calibration is not None:
        log("calibration: " + ", ".join(
            f"{n} {w:+.3f}" for n, w in zip(calibration.inputs, calibration.weights,
                                             strict=True)) + f", bias {calibration.bias:+.3f}")
    if write:
        stored = store_scorer(artifacts, scorer, solver.spec.search if search else None,
                              calibration)
        log(f"wrote {stored}")
    return scorer
