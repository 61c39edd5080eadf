"""Result records for input records: one per record, in order, whatever fails."""

from __future__ import annotations

from typing import Any

from .errors import MyceliumError
from .memory import release_memory
from .records import InputRecord
from .spec import search_record


def error_record(record_id: Any, message: str | None) -> dict[str, Any]:
    """The record of a problem that was not solved, with the reason."""
    return {"id": record_id, "answer": None, "answer_exact": None, "program": [],
            "confidence": 0.0, "error": message}


def solve_records(solver: Any, batch: list[InputRecord]) -> list[dict[str, Any]]:
    """Result records for a batch in input order (records from several sources may share
    line numbers); a failing batch is retried one by one."""
    todo = [at for at, r in enumerate(batch) if r.question is not None]
    results: dict[int, dict[str, Any]] = {}
    try:
        solved = solver.solve([batch[at].question for at in todo], [batch[at].id for at in todo])
        results = {at: s.to_record() for at, s in zip(todo, solved, strict=True)}
    except MyceliumError:
        for at in todo:
            record = batch[at]
            try:
                (single,) = solver.solve([record.question], [record.id])
                results[at] = single.to_record()
            except MyceliumError as exc:
                results[at] = error_record(record.id, str(exc))
    release_memory()  # the batch's tensors are freed: give their pages back
    return [results[at] if r.question is not None else error_record(r.id, r.error)
            for at, r in enumerate(batch)]


def abstain_below(record: dict[str, Any], min_confidence: float) -> dict[str, Any]:
    """The record with its answer withheld when its confidence is under ``min_confidence``
    (the program and the confidence stay, for inspection; the error says why)."""
    if record["answer"] is None or record["confidence"] >= min_confidence:
        return record
    return {**record, "answer": None, "answer_exact": None,
            "error": f"abstained: confidence {record['confidence']:.3f} below "
                     f"--min-confidence {min_confidence:g}"}


def info_payload(solver: Any) -> dict[str, Any]:
    """What `mycelium-rt info` prints: artifacts, manifest, search, scorer, versions,
    providers."""
    from importlib import metadata

    import numpy
    import onnxruntime
    import tokenizers

    return {
        "artifacts": str(solver.folder),
        "manifest": solver.manifest.summary(),
        "search": search_record(solver.spec.search),
        "answer_scorer": (
            "program writer (its finished programs' beam probability pooled per value)"
            if solver.manifest.writes_programs
            else f"learned ({len(solver.spec.answer_scorer.features)} candidate features)"
            if solver.spec.answer_scorer is not None
            else "default ranking (mean step log-probability, answer-class prior)"
        ),
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": numpy.__version__,
            "click": metadata.version("click"),
        },
        "providers": {
            "available": onnxruntime.get_available_providers(),
            "chosen": solver.provider,
        },
    }
