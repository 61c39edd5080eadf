"""Benchmark: problems/second, latency and accuracy, beside PyTorch eager and CoT.

    python -m benchmarks.run --data FILE.jsonl [--split all|dev] [--artifacts DIR]
        [--checkpoint DIR] [--limit N] [--provider auto|cpu|cuda|tensorrt] [--threads N]
        [--batch-size N] [--sweep 1,4,16,64] [--baselines torch,cot] [--cot-tokens 320]
        [--cot-batch-size 4] [--cot-shots FILE] [--latency-limit N] [--cot-latency-limit 16]
        [--warmup N] [--spans-from DIR] [--profile] [--note TEXT] [--quick] --out DIR

Writes DIR/report.json (fixed field names, see benchmarks/report.py), DIR/report.md
and PNG plots. Each system is measured in its own process (benchmarks/worker.py),
one after the other: the runtime's process never imports torch. Gold answers are
read only after solving and never reach a solver.

Baselines: ``torch`` runs the same pipeline on PyTorch eager from ``--checkpoint``; without
one (the embedded default ships only ONNX) from a checkpoint of the artifacts' own shapes
holding their graphs' weights read back, fed the artifacts' own spans, labelled so. For a
program writer's set ``--checkpoint`` is the writer's training run: its writer runs on
PyTorch (bf16, as its evaluation does), the segmenter stays the set's ONNX graph. ``cot``
is Qwen2.5-Coder-0.5B-Instruct writing a few-shot chain of thought on onnxruntime-genai
(``benchmarks/cot.py``), fetched and built on first use and cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from mycelium.runtime.artifacts import resolve_artifacts
from mycelium.runtime.errors import MyceliumError
from mycelium.runtime.manifest import load_manifest

from . import plots
from .data import SPLITS, accuracy, load_gold, load_problems
from .provenance import check_exported_from
from .report import build_report, machine_load, validate_report, write_json, write_markdown

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("torch", "cot")
SWEEP = (1, 4, 16, 64, 256)
# Quick (smoke) mode: a handful of problems, short CoT, two batch sizes; well-formedness only.
QUICK = {"limit": 4, "batch_size": 4, "warmup": 1, "latency_limit": 2, "cot_tokens": 32}
COT_TOKENS = 320
COT_BATCH_SIZE = 4
COT_LATENCY_LIMIT = 16
QUICK_SHOT_LINES = (1,)  # one worked example: the tiny quick model's context is short
EXAMPLES = ROOT / "examples" / "problems.jsonl"


def _log(message: str) -> None:
    click.echo(f"[bench] {message}", err=True)


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def run_worker(job: dict[str, Any], work: Path, timeout: float | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; its figures (raises on failure)."""
    job_path, out_path = work / f"{job['kind']}.job.json", work / f"{job['kind']}.out.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", str(job_path), str(out_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout,
    )
    if proc.returncode != 0 or not out_path.is_file():
        raise RuntimeError(f"{job['kind']} measurement failed (exit {proc.returncode})")
    return json.loads(out_path.read_text(encoding="utf-8"))


def quick_artifacts(work: Path) -> tuple[Path, Path]:
    """A tiny random checkpoint made in-process and its export (quick mode)."""
    from mycelium.export import export_checkpoint

    from .make_checkpoint import make_checkpoint

    checkpoint = make_checkpoint("tiny", work / "tiny_checkpoint", seed=0)
    artifacts = work / "tiny_artifacts"
    export_checkpoint(checkpoint, artifacts, precision="fp32", log=lambda _text: None)
    return checkpoint, artifacts


def default_sweep(batch_size: int, problems: int) -> tuple[int, ...]:
    """Batch sizes of the throughput sweep: powers of 4 up to the problem count, and B."""
    return tuple(sorted({size for size in SWEEP if size <= problems} | {batch_size, 1}))


def _agreement(runtime: list[str | None], other: list[str | None]) -> float:
    same = sum(a == b for a, b in zip(runtime, other, strict=True))
    return same / len(runtime) if runtime else 0.0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="JSONL problems (question, optional id, optional gold/answer).")
@click.option("--split", type=click.Choice(SPLITS), default="all", show_default=True,
              help="dev: keep 0-based lines i with i % 10 == 0 (GSM8K train dev split).")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Artifacts folder (default: $MYCELIUM_ARTIFACTS, else the embedded default).")
@click.option("--checkpoint", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Checkpoint the artifacts were exported from (baselines).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N problems.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
              default="auto", show_default=True, help="onnxruntime provider of the runtime.")
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="Threads of onnxruntime and torch (default: theirs).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None,
              help="Problems per call of the batched passes [default: 16; quick: 4].")
@click.option("--sweep", default=None,
              help="Batch sizes of the throughput sweep, comma-separated "
              "[default: 1,4,16,64,256 up to the problem count, and --batch-size].")
@click.option("--baselines", default="", help="Comma-separated: torch, cot.")
@click.option("--cot-tokens", type=click.IntRange(1, 4096), default=None,
              help=f"Most tokens the CoT baseline writes per problem (it stops at its end of "
              f"turn) [default: {COT_TOKENS}; quick: {QUICK['cot_tokens']}].")
@click.option("--cot-batch-size", type=click.IntRange(1, 256), default=COT_BATCH_SIZE,
              show_default=True, help="Problems per batch of the CoT engine.")
@click.option("--cot-shots", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="GSM8K train.jsonl giving the CoT's worked examples (lines 1-4) "
              "[default: ../shared/data/gsm8k/train.jsonl].")
@click.option("--latency-limit", type=click.IntRange(1), default=None,
              help="Problems timed one at a time (default: all).")
@click.option("--cot-latency-limit", type=click.IntRange(1), default=COT_LATENCY_LIMIT,
              show_default=True,
              help="Problems the CoT baseline generates one at a time (each writes the full "
              "solution, so this is the slow part).")
@click.option("--warmup", type=click.IntRange(1), default=None,
              help="Problems of the warm-up stage (default: one batch).")
@click.option("--profile", is_flag=True,
              help="cProfile one extra (untimed) batched runtime pass into DIR/profile.txt.")
@click.option("--spans-from", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Replace the segmenter's spans by those of this (trained) "
              "artifacts folder's segmenter; the measured segmenter still runs and is timed. "
              "For random-weight checkpoints: realistic search sizes.")
@click.option("--note", default=None, help="A line of context for the report.")
@click.option("--quick", is_flag=True,
              help="Smoke mode: a handful of problems, a tiny checkpoint made in-process.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for report.json, report.md and the plots.")
def main(data: Path | None, split: str, artifacts: Path | None, checkpoint: Path | None,
         limit: int | None, provider: str, threads: int | None, batch_size: int | None,
         sweep: str | None, baselines: str, cot_tokens: int | None, cot_batch_size: int,
         cot_shots: Path | None,
         latency_limit: int | None, cot_latency_limit: int, warmup: int | None, profile: bool,
         spans_from: Path | None, note: str | None,
         quick: bool, out: Path) -> None:
    """Measure the runtime (and the baselines asked for) on the problems of --data."""
    asked = _csv(baselines)
    unknown = set(asked) - set(BASELINES)
    if unknown:
        raise click.BadParameter(f"unknown baseline(s) {', '.join(sorted(unknown))}",
                                 param_hint="--baselines")
    if quick:
        data = data or EXAMPLES
        limit = limit or QUICK["limit"]
        batch_size = batch_size or QUICK["batch_size"]
        warmup = warmup or QUICK["warmup"]
        latency_limit = latency_limit or QUICK["latency_limit"]
        cot_tokens = cot_tokens or QUICK["cot_tokens"]
    if data is None:
        raise click.UsageError("--data FILE.jsonl is required (or --quick)")
    batch_size = batch_size or 16
    cot_tokens = cot_tokens or COT_TOKENS
    problems = load_problems(data, split, limit)
    if not problems:
        raise click.ClickException(f"no problems in {data} (split {split})")
    if sweep:
        try:
            sizes = tuple(sorted({int(x) for x in _csv(sweep)} | {batch_size}))
        except ValueError:
            raise click.BadParameter(f"not a list of integers: {sweep!r}",
                                     param_hint="--sweep") from None
        if min(sizes) < 1:
            raise click.BadParameter("batch sizes must be >= 1", param_hint="--sweep")
    elif quick:
        sizes = tuple(sorted({1, batch_size}))
    else:
        sizes = default_sweep(batch_size, len(problems))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mycelium-bench-") as tmp:
        work = Path(tmp)
        if quick and artifacts is None and checkpoint is None:
            _log("quick: making a tiny random checkpoint and exporting it")
            checkpoint, artifacts = quick_artifacts(work)
        try:
            folder = resolve_artifacts(artifacts)
        except MyceliumError as exc:
            raise click.ClickException(str(exc)) from None
        torch_model, overrides = None, {}
        writes_programs = load_manifest(folder, verify=False).writes_programs
        if "torch" in asked:
            if checkpoint is None and writes_programs:
                raise click.UsageError(
                    f"--baselines torch: {folder} is a program writer's set; give its "
                    "training run as --checkpoint RUN")
            if checkpoint is None:
                checkpoint, torch_model = _checkpoint_like(folder, work)
                overrides["torch"] = {"spans_from": str(spans_from or folder)}
            elif writes_programs:
                torch_model = (f"the writer of run {checkpoint} on PyTorch eager (bf16, as "
                               "its training evaluation runs it), the set's ONNX segmenter")
            else:
                torch_model = f"the same pipeline on PyTorch eager, checkpoint {checkpoint}"
        if checkpoint is not None:
            try:
                check_exported_from(checkpoint, load_manifest(folder, verify=False))
            except (ValueError, MyceliumError) as exc:
                raise click.ClickException(str(exc)) from None
        job = {
            "artifacts": str(folder),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "provider": provider,
            "threads": threads,
            "questions": [p.question for p in problems],
            "batch_size": batch_size,
            "sweep": list(sizes),
            "warmup": warmup,
            "latency_limit": latency_limit,
            "cot_latency_limit": min(cot_latency_limit, latency_limit or cot_latency_limit),
            "profile": profile,
            "spans_from": str(spans_from) if spans_from else None,
            "cot_tokens": cot_tokens,
            "cot_batch_size": cot_batch_size,
            "cot_shots": str(cot_shots) if cot_shots else None,
            "cot_shot_lines": list(QUICK_SHOT_LINES) if quick else None,
            "cot_source": str(checkpoint / "extractor") if quick and checkpoint else None,
        }
        load = {"start": machine_load()}
        _log(f"runtime: {len(problems)} problems from {data}, artifacts {folder}")
        started = time.perf_counter()
        try:
            runtime = run_worker({**job, "kind": "runtime"}, work)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        figures: dict[str, dict[str, Any] | None] = {}
        for name in asked:
            _log(f"baseline {name}")
            load[f"before_{name}"] = machine_load(0.2)
            try:
                figures[name] = run_worker(
                    {**job, "kind": name, "profile": False, **overrides.get(name, {})}, work)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                figures[name] = {"error": str(exc)}
        load["end"] = machine_load(0.2)
    # Scoring: gold is read now, after every solver has answered.
    golds = load_gold(data, split, limit)
    acc = accuracy(runtime["answers"], golds)
    torch_figures = figures.get("torch")
    if torch_figures and "answers" in torch_figures:
        torch_figures["answers_agree_with_runtime"] = _agreement(
            runtime["answers"], torch_figures["answers"]
        )
        torch_figures["accuracy"] = accuracy(torch_figures["answers"], golds)["accuracy"]
        torch_figures["model"] = torch_model
    cot_figures = figures.get("cot")
    if cot_figures and "answers" in cot_figures:
        cot_figures["accuracy_detail"] = accuracy(cot_figures["answers"], golds)
        cot_figures["accuracy"] = cot_figures["accuracy_detail"]["accuracy"]
        _write_solutions(out / "cot_solutions.jsonl", problems, cot_figures, golds)
    config = {
        "data": str(data), "split": split, "limit": limit, "artifacts": str(folder),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "provider_requested": provider, "threads": threads, "batch_size": batch_size,
        "sweep": list(sizes), "baselines": list(asked), "cot_tokens": cot_tokens,
        "cot_batch_size": cot_batch_size, "latency_limit": latency_limit,
        "cot_latency_limit": cot_latency_limit, "quick": quick,
        "python": sys.version.split()[0], "note": note,
        "spans_from": str(spans_from) if spans_from else None,
        "wall_seconds": time.perf_counter() - started,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    extra: dict[str, Any] = {}
    if runtime.get("profile"):
        (out / "profile.txt").write_text(runtime["profile"], encoding="utf-8")
        extra["profile_top"] = _profile_top(runtime["profile"])
    report = build_report(runtime, figures, accuracy=acc, config=config, load=load, extra=extra)
    why_not = plots.available()
    drawn = plots.draw(report, out) if why_not is None else []
    report["plots"] = [Path(p).name for p in drawn]
    if why_not:
        report["plots_skipped"] = why_not
    write_json(report, out / "report.json")
    write_markdown(report, out / "report.md", drawn)
    problems_found = validate_report(report, asked)
    if problems_found:
        raise click.ClickException("malformed report: " + "; ".join(problems_found))
    _summary(report)


def _checkpoint_like(artifacts: Path, work: Path) -> tuple[Path, str]:
    """A checkpoint of the artifacts' own models, their weights read back from the graphs
    (their checkpoint is not at hand)."""
    from .make_checkpoint import checkpoint_like
    from .provenance import like_stamp

    _log(f"torch: no --checkpoint; the weights of {artifacts}'s graphs read back into a "
         "checkpoint (dequantized)")
    checkpoint = checkpoint_like(artifacts, work / "checkpoint_like", weights="artifacts")
    stamp = like_stamp(checkpoint) or {}
    return checkpoint, (f"the artifacts' own models on PyTorch eager, their "
                        f"{stamp.get('precision', '')} weights read back from the graphs "
                        "(dequantized, fp32 activations), fed the artifacts' own spans")


def _write_solutions(path: Path, problems: list, figures: dict[str, Any],
                     golds: list) -> None:
    """What the CoT model wrote for each problem, with its answer and the gold value."""
    with path.open("w", encoding="utf-8") as sink:
        for problem, text, answer, gold in zip(problems, figures.pop("solutions", []),
                                               figures["answers"], golds, strict=False):
            sink.write(json.dumps({"id": problem.id, "solution": text, "answer": answer,
                                   "gold": None if gold is None else str(gold)}) + "\n")


def _profile_top(text: str, lines: int = 22) -> str:
    """The head of the own-time section of a cProfile listing."""
    section = text.split("== sorted by cumulative ==")[0]
    kept = [line for line in section.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(kept) if "ncalls" in line), 0)
    return "\n".join(kept[start:start + lines])


def _summary(report: dict[str, Any]) -> None:
    def fmt(value: float | None, unit: str = "") -> str:
        return "—" if value is None else f"{value:.3g}{unit}"

    click.echo(
        f"{report['problems']} problems on {report['device']} ({report['provider']}): "
        f"{fmt(report['problems_per_second'])} problems/s at batch {report['batch_size']}, "
        f"latency p50 {fmt(report['latency_ms_p50'])} ms p95 {fmt(report['latency_ms_p95'])} ms, "
        f"accuracy {fmt(report['accuracy'])}"
    )
    for field in ("speedup_vs_torch", "speedup_vs_cot", "latency_speedup_vs_cot"):
        if field in report:
            click.echo(f"{field}: {fmt(report[field], 'x')}")


if __name__ == "__main__":
    main()
