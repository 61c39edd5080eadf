"""Solve problems at scale with Ray Data: one Solver per actor, loaded once (the `ray` extra).

    from mycelium.runtime.ray import solve_dataset
    solved = solve_dataset(ray.data.read_parquet("s3://bucket/problems"), concurrency=8)

`solve_jsonl` is `mycelium-rt solve --engine ray`: the input is read with Ray's text
reader (any path it takes), every line keeps its number, and the records come back in
input order, one per non-empty line, exactly as the local engine writes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray

from .answers import abstain_below, solve_records
from .records import InputRecord, dump_record, parse_line, record_from_object

RESULT_COLUMNS = ("answer", "answer_exact", "confidence", "program", "error")


class _SolveBatch:
    """The map_batches actor: a Solver loaded once, then batch after batch."""

    def __init__(self, artifacts: str | None, provider: str, threads: int | None,
                 search: Sequence[str], min_confidence: float, lines: bool):
        from .solver import Solver

        self.solver = Solver.load(artifacts, provider, threads=threads, search=tuple(search))
        self.min_confidence = min_confidence
        self.lines = lines

    def _answer(self, records: list[InputRecord]) -> list[dict[str, Any]]:
        results = solve_records(self.solver, records)
        if self.min_confidence > 0:
            results = [abstain_below(r, self.min_confidence) for r in results]
        return results

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.lines:
            return self._lines(batch)
        size = len(next(iter(batch.values()))) if batch else 0
        records = []
        for row in range(size):
            problem = {"question": batch["question"][row]} if "question" in batch else {}
            if "id" in batch:
                problem["id"] = _plain(batch["id"][row])
            if "question" in problem:
                problem["question"] = _plain(problem["question"])
            records.append(record_from_object(problem, row, f"row id {problem.get('id')!r}"))
        results = self._answer(records)
        out = dict(batch)
        out["answer"] = np.array([r["answer"] for r in results], dtype=object)
        out["answer_exact"] = np.array([r["answer_exact"] for r in results], dtype=object)
        out["confidence"] = np.array([r["confidence"] for r in results], dtype=np.float64)
        out["program"] = np.array([json.dumps(r["program"]) for r in results], dtype=object)
        out["error"] = np.array([r["error"] for r in results], dtype=object)
        return out

    def _lines(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # A row does not know its line number: records are made for line 0 and the
        # driver, which reads the rows in order, writes the number in (`_numbered`).
        parsed = [parse_line(str(text).encode("utf-8"), _UNNUMBERED) for text in batch["text"]]
        results = iter(self._answer([r for r in parsed if r is not None]))
        written = [dump_record(next(results)) if r is not None else "" for r in parsed]
        renumber = [r is not None and (r.id is _UNNUMBERED or r.error is not None)
                    for r in parsed]
        return {"record": np.array(written, dtype=object),
                "default_id": np.array([r is not None and r.id is _UNNUMBERED for r in parsed]),
                "renumber": np.array(renumber)}


class _Unnumbered(int):
    """Line 0, recognisable by identity as the stand-in for a row's line number."""


_UNNUMBERED = _Unnumbered(0)


def _numbered(record: str, line: int, default_id: bool) -> str:
    """A record made for line 0 with the row's real line number."""
    data = json.loads(record)
    if default_id:
        data["id"] = line
    if isinstance(data.get("error"), str) and data["error"].startswith("line 0:"):
        data["error"] = f"line {line}:" + data["error"][len("line 0:"):]
    return dump_record(data)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value a JSON record holds."""
    return value.item() if isinstance(value, np.generic) else value


def solve_dataset(ds: ray.data.Dataset, artifacts: str | None = None, *,
                  batch_size: int = 64, concurrency: int = 1, provider: str = "cpu",
                  threads: int | None = None, num_cpus: float = 1, num_gpus: float = 0,
                  search: Sequence[str] = (), min_confidence: float = 0.0) -> ray.data.Dataset:
    """``ds`` with the result columns added to every row (``question`` in, ``id`` and every
    other column carried through): answer, answer_exact, confidence, program (the JSON
    text of the CLI's program), error. A row that cannot be solved gets its error, never
    a failed job. ``concurrency`` actors each load one Solver; ``num_gpus`` per actor."""
    return ds.map_batches(
        _SolveBatch, batch_size=batch_size, concurrency=concurrency, batch_format="numpy",
        num_cpus=num_cpus, num_gpus=num_gpus or None,
        fn_constructor_kwargs={"artifacts": artifacts, "provider": provider,
                               "threads": threads, "search": list(search),
                               "min_confidence": min_confidence, "lines": False})


def solve_jsonl(source: str, sink, artifacts: str | None = None, *, batch_size: int = 16,
                concurrency: int = 1, provider: str = "cpu", threads: int | None = None,
                num_cpus: float = 1, num_gpus: float = 0, search: Sequence[str] = (),
                min_confidence: float = 0.0) -> int:
    """Solve the JSONL at ``source`` (any path Ray's text reader takes) and write one record
    per non-empty line to the text stream ``sink``, in input order; the records written."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    # reading is I/O: its tasks take no CPU slot, so N actors on N CPUs never starve it
    solved = ray.data.read_text(source, drop_empty_lines=False,
                                ray_remote_args={"num_cpus": 0}).map_batches(
        _SolveBatch, batch_size=batch_size, concurrency=concurrency, batch_format="numpy",
        num_cpus=num_cpus, num_gpus=num_gpus or None,
        fn_constructor_kwargs={"artifacts": artifacts, "provider": provider,
                               "threads": threads, "search": list(search),
                               "min_confidence": min_confidence, "lines": True})
    line = 0
    written = 0
    for batch in solved.iter_batches(batch_format="numpy", batch_size=None):
        for record, default_id, renumber in zip(batch["record"], batch["default_id"],
                                                batch["renumber"], strict=True):
            line += 1
            if record:
                sink.write(_numbered(record, line, default_id) if renumber else record)
                written += 1
    sink.flush()
    return written
