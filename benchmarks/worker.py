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
    """Peak resident set size of this process, in MiB: /proc's VmHWM where there is one.

    Not ``ru_maxrss``: across a vfork + exec (how subprocess starts this worker) Linux
    carries the parent's high-water mark into it, so a parent that had loaded torch would
    be counted as this worker's peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
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
    precision = "bf16" if solver.writer is not None else "fp32"  # a writer runs as trained
    out.update(load_seconds=load_seconds, provider="torch-eager-cpu", precision=precision,
               torch_threads=torch.get_num_threads(), torch_version=torch.__version__)
    return out


def run_cot(job: dict[str, Any]) -> dict[str, Any]:
    """Chain of thought by a real small LM on onnxruntime-genai (``benchmarks.cot``): the
    pinned Qwen2.5-Coder-0.5B-Instruct, or in quick mode the tiny checkpoint's extractor."""
    import onnxruntime_genai

    from .cot import (
        COT_PRECISION,
        ENGINE,
        CotEngine,
        build_engine_model,
        chat_template,
        default_cache,
        load_shots,
        measure_cot,
        pinned_cot_model,
    )

    cache = Path(job["cot_cache"]) if job.get("cot_cache") else default_cache()
    start = time.perf_counter()
    if job.get("cot_source"):  # quick mode: a tiny causal LM folder, fp32
        source = Path(job["cot_source"])
        folder = build_engine_model(source, cache / "quick", precision="fp32")
        model = f"tiny random causal LM ({source}), {ENGINE} fp32 (quick mode: speed only)"
    else:
        folder = pinned_cot_model(cache)
        source = Path(json.loads((folder / "mycelium-cot.json").read_text("utf-8"))["source"])
        model = (f"Qwen2.5-Coder-0.5B-Instruct (pinned GGUF, sha256 1d9614638d18...), "
                 f"{ENGINE} {onnxruntime_genai.__version__} {COT_PRECISION} CPU, "
                 f"{len(job.get('cot_shot_lines') or (1, 2, 3, 4))}-shot chat, greedy")
    build_seconds = time.perf_counter() - start
    _progress(f"CoT model ready in {build_seconds:.1f}s: {folder}")
    shots = load_shots(job.get("cot_shots"), *(
        [tuple(job["cot_shot_lines"])] if job.get("cot_shot_lines") else []))
    start = time.perf_counter()
    engine = CotEngine(folder, shots, template=chat_template(source),
                       threads=job.get("threads"), new_tokens=job.get("cot_tokens") or 320)
    load_seconds = time.perf_counter() - start
    _progress(f"CoT model loaded in {load_seconds:.1f}s")
    out = measure_cot(
        engine, job["questions"], batch_size=job.get("cot_batch_size") or job["batch_size"],
        warmup=job.get("warmup"),
        latency_limit=job.get("cot_latency_limit") or job.get("latency_limit"),
        progress=_progress,
    )
    out.update(load_seconds=load_seconds, build_seconds=build_seconds, model=model,
               provider=f"{ENGINE}-cpu", precision="fp32" if job.get("cot_source")
               else COT_PRECISION, engine_version=onnxruntime_genai.__version__)
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
