"""One measurement in its own process: ``python -m benchmarks.worker JOB.json OUT.json``.

Each system (the onnxruntime runtime, the PyTorch-eager pipeline, CoT) is measured
in a fresh process, one after the other, so that its peak RSS is its own, memory
is given back between them, and the runtime's process never imports torch (checked).
The job holds the questions only: gold answers never reach a worker.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _pipeline_options(job: dict[str, Any]) -> dict[str, Any]:
    spans = None
    if job.get("spans_from"):
        from .measure import spans_of

        _progress(f"spans from the segmenter of {job['spans_from']} (not timed)")
        spans = spans_of(job["spans_from"], job["questions"])
    return {
        "spans": spans,
        "batch_size": job["batch_size"],
        "sweep": job.get("sweep", ()),
        "warmup": job.get("warmup"),
        "latency_limit": job.get("latency_limit"),
        "progress": _progress,
    }


def run_runtime(job: dict[str, Any]) -> dict[str, Any]:
    """The onnxruntime Solver; asserts that torch is never imported in this process."""
    from mycelium.runtime.solver import Solver

    from .measure import measure_pipeline

    assert "torch" not in sys.modules, "the runtime measurement must not import torch"
    start = time.perf_counter()
    solver = Solver.load(job["artifacts"], job.get("provider", "auto"), threads=job.get("threads"))
    load_seconds = time.perf_counter() - start
    _progress(f"runtime loaded in {load_seconds:.1f}s (provider {solver.provider})")
    out = measure_pipeline(
        solver, job["questions"], profile=job.get("profile", False), **_pipeline_options(job)
    )
    assert "torch" not in sys.modules, "the runtime measurement imported torch"
    out.update(
        load_seconds=load_seconds,
        provider=solver.provider,
        precision=solver.manifest.precision,
        torch_imported=False,
    )
    return out


def run_torch(job: dict[str, Any]) -> dict[str, Any]:
    """The same pipeline with its models on PyTorch eager (transformers)."""
    import torch

    from .measure import measure_pipeline
    from .torch_runners import load_torch_solver

    start = time.perf_counter()
    solver = load_torch_solver(job["checkpoint"], job["artifacts"], threads=job.get("threads"))
    load_seconds = time.perf_counter() - start
    _progress(f"torch pipeline loaded in {load_seconds:.1f}s ({torch.get_num_threads()} threads)")
    out = measure_pipeline(solver, job["questions"], **_pipeline_options(job))
    out.update(load_seconds=load_seconds, provider="torch-eager-cpu", precision="fp32",
               torch_threads=torch.get_num_threads(), torch_version=torch.__version__)
    return out


def run_cot(job: dict[str, Any]) -> dict[str, Any]:
    """Chain-of-thought generation by a causal LM of the extractor's shape."""
    import torch
    from tokenizers import Tokenizer

    from mycelium.runtime.spec import SolverSpec

    from .cot import CotGenerator, load_cot_model, measure_cot

    checkpoint = Path(job["checkpoint"])
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    start = time.perf_counter()
    model = load_cot_model(checkpoint, job.get("cot_weights", "extractor"))
    tokenizer = Tokenizer.from_file(str(checkpoint / "extractor" / "tokenizer.json"))
    spec = SolverSpec.from_dict(json.loads((checkpoint / "mycelium.json").read_text("utf-8")))
    special = spec.special_tokens
    generator = CotGenerator(
        model, tokenizer,
        pad_id=tokenizer.token_to_id(special["pad"]),
        eos_id=tokenizer.token_to_id(special["eos"]),
        new_tokens=job.get("cot_tokens", 200),
        max_prompt_tokens=spec.max_problem_tokens,
    )
    load_seconds = time.perf_counter() - start
    _progress(f"CoT model loaded in {load_seconds:.1f}s ({torch.get_num_threads()} threads)")
    out = measure_cot(
        generator, job["questions"], batch_size=job["batch_size"], warmup=job.get("warmup"),
        latency_limit=job.get("cot_latency_limit") or job.get("latency_limit"),
        progress=_progress,
    )
    out.update(load_seconds=load_seconds, provider="torch-eager-cpu", precision="fp32",
               weights=job.get("cot_weights", "extractor"),
               torch_threads=torch.get_num_threads(), torch_version=torch.__version__)
    return out


RUNNERS = {"runtime": run_runtime, "torch": run_torch, "cot": run_cot}


def main(argv: list[str] | None = None) -> int:
    """Run the job file's measurement and write its figures as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.worker JOB.json OUT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    out = RUNNERS[job["kind"]](job)
    out["kind"] = job["kind"]
    out["peak_rss_mb"] = peak_rss_mb()
    Path(args[1]).write_text(json.dumps(out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
