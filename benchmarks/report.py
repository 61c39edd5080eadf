"""The benchmark report: report.json (fixed field names) and report.md."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mycelium.runtime.manifest import MODEL_NAMES as MODELS
from mycelium.runtime.stats import STAGES

# Fixed fields of report.json and their JSON types (None: may be null).
FIXED_FIELDS: dict[str, tuple[type, ...]] = {
    "problems": (int,),
    "problems_per_second": (float,),
    "latency_ms_p50": (float,),
    "latency_ms_p95": (float,),
    "accuracy": (float, type(None)),
    "tokens_per_problem": (dict,),
    "stage_seconds": (dict,),
    "peak_rss_mb": (float,),
    "provider": (str,),
    "device": (str,),
}
# Fields present when the baseline was asked for (null if it failed to run).
BASELINE_FIELDS: dict[str, tuple[str, ...]] = {
    "torch": ("speedup_vs_torch",),
    "cot": ("speedup_vs_cot", "latency_speedup_vs_cot"),
}
# What report["baselines"][NAME] always carries (null where not measured).
BASELINE_SUMMARY = ("accuracy", "problems_per_second", "latency_ms_p50", "latency_ms_p95",
                    "peak_rss_mb", "model")
# Targets against the baselines, measured in one run (ratios: the machine is shared).
TARGETS = (
    ("accuracy_minus_cot", ">=", 0.0, "accuracy at least the CoT baseline's"),
    ("speedup_vs_cot", ">=", 5.0, ">= 5x CoT in batched throughput"),
    ("latency_speedup_vs_cot", ">=", 10.0, ">= 10x CoT in batch-1 latency (p50)"),
    ("speedup_vs_torch", ">=", 2.0, ">= 2x PyTorch eager (throughput)"),
)


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, or None."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


def device_name(provider: str) -> str:
    """What the runtime ran on: the GPU name for cuda/tensorrt, else the CPU model name."""
    if provider in ("cuda", "tensorrt"):
        return gpu_name() or "GPU (name unavailable)"
    return cpu_name()


def machine_load(sample_seconds: float = 1.0) -> dict[str, Any]:
    """Load average and the other processes busy on the machine (for honest figures)."""
    load: dict[str, Any] = {"loadavg": list(os.getloadavg()), "cpu_count": os.cpu_count()}
    try:
        import psutil
    except ImportError:
        return load
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid != me]
    for proc in procs:
        try:
            proc.cpu_percent(interval=None)  # starts the per-process sample
        except psutil.Error:
            continue
    load["system_cpu_percent"] = psutil.cpu_percent(interval=sample_seconds)
    rows = []
    for proc in procs:
        try:
            percent = proc.cpu_percent(interval=None)
        except psutil.Error:
            continue
        if percent >= 20.0:
            cmd = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])
            rows.append({"pid": proc.pid, "cpu_percent": percent, "cmd": cmd[:160]})
    load["busy_processes"] = sorted(rows, key=lambda row: -row["cpu_percent"])
    return load


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)


def _floats(values: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in values.items()}


def build_report(
    runtime: dict[str, Any],
    baselines: dict[str, dict[str, Any] | None],
    *,
    accuracy: dict[str, Any],
    config: dict[str, Any],
    load: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """report.json: the fixed fields first, then details (sweep, baselines, load, targets)."""
    tokens = _floats(runtime["tokens_per_problem"])
    report: dict[str, Any] = {
        "problems": int(runtime["problems"]),
        "problems_per_second": float(runtime["problems_per_second"]),
        "latency_ms_p50": float(runtime["latency_ms_p50"]),
        "latency_ms_p95": float(runtime["latency_ms_p95"]),
        "accuracy": accuracy["accuracy"],
        "tokens_per_problem": tokens,
        "stage_seconds": {stage: float(runtime["stage_seconds"].get(stage, 0.0))
                          for stage in STAGES},
        "peak_rss_mb": float(runtime["peak_rss_mb"]),
        "provider": str(runtime["provider"]),
        "device": device_name(str(runtime["provider"])),
    }
    torch_figures = baselines.get("torch")
    cot = baselines.get("cot")
    if "torch" in baselines:
        report["speedup_vs_torch"] = _ratio(
            report["problems_per_second"], (torch_figures or {}).get("problems_per_second")
        )
    if "cot" in baselines:
        report["speedup_vs_cot"] = _ratio(
            report["problems_per_second"], (cot or {}).get("problems_per_second")
        )
        report["latency_speedup_vs_cot"] = _ratio(
            (cot or {}).get("latency_ms_p50"), report["latency_ms_p50"]
        )
        cot_accuracy = (cot or {}).get("accuracy")
        report["accuracy_minus_cot"] = (None if cot_accuracy is None or report["accuracy"] is None
                                        else report["accuracy"] - cot_accuracy)
    report.update(
        {
            "accuracy_detail": accuracy,
            "cpu_count": os.cpu_count(),
            "batch_size": int(runtime["batch_size"]),
            "latency_problems": int(runtime["latency_problems"]),
            "latency_ms_mean": float(runtime["latency_ms_mean"]),
            "stage_seconds_batch1": _floats(runtime["stage_seconds_batch1"]),
            "stage_seconds_note": "seconds of the timed batched pass; tokenize is also "
            "counted inside classify and extract (nested timers of Solver.stats)",
            "tokens_total": runtime["tokens"],
            "search": {key: runtime[key] for key in
                       ("spans_per_problem", "groups_per_problem", "extractor_rows_per_problem")},
            "errors": runtime["errors"],
            "sweep": runtime["sweep"],
            "seconds": runtime["seconds"],
            "warmup_problems": runtime["warmup_problems"],
            "load_seconds": runtime["load_seconds"],
            "precision": runtime.get("precision"),
            "config": config,
            "load": load,
            "baselines": {name: _baseline_summary(figures) for name, figures in baselines.items()},
            "targets": targets(report),
            "latency_ms": runtime["latency_ms"],
        }
    )
    if cot:
        report["cot_tokens_per_problem"] = cot["tokens_per_problem"]["total"]
        report["tokens_ratio_cot_over_pipeline"] = _ratio(
            cot["tokens_per_problem"]["total"], tokens["total"]
        )
    if extra:
        report.update(extra)
    return report


def _baseline_summary(figures: dict[str, Any] | None) -> dict[str, Any] | None:
    if figures is None:
        return None
    if "error" in figures:
        return {"error": figures["error"]}
    keep = ("problems", "batch_size", "seconds", "latency_problems", "latency_ms_mean",
            "tokens_per_problem", "stage_seconds", "load_seconds", "build_seconds", "sweep",
            "provider", "precision", "engine_version", "torch_threads", "torch_version",
            "new_tokens", "generated_tokens_per_problem", "prompt_tokens_per_problem",
            "generated_tokens_per_second", "accuracy_detail", "answers_agree_with_runtime",
            "latency_ms")
    summary = {key: figures.get(key) for key in BASELINE_SUMMARY}
    return {**summary, **{key: figures[key] for key in keep if key in figures}}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Whether each target holds (None when its figure was not measured)."""
    rows = []
    for field, _op, threshold, label in TARGETS:
        value = report.get(field)
        rows.append({"target": label, "field": field, "threshold": threshold, "value": value,
                     "holds": None if value is None else bool(value >= threshold)})
    return rows


def validate_report(report: dict[str, Any], baselines: tuple[str, ...] = ()) -> list[str]:
    """Problems with the fixed fields of a report (empty when well formed)."""
    problems = []
    for name, types in FIXED_FIELDS.items():
        if name not in report:
            problems.append(f"missing field {name}")
        elif isinstance(report[name], bool) or not isinstance(report[name], types):
            problems.append(f"{name} has type {type(report[name]).__name__}")
    for baseline in baselines:
        summary = (report.get("baselines") or {}).get(baseline)
        if isinstance(summary, dict) and "error" not in summary:
            problems += [f"baselines.{baseline} lacks {name}" for name in BASELINE_SUMMARY
                         if name not in summary]
        for name in BASELINE_FIELDS[baseline]:
            if name not in report:
                problems.append(f"missing field {name}")
            elif report[name] is not None and not isinstance(report[name], float):
                problems.append(f"{name} has type {type(report[name]).__name__}")
    if isinstance(report.get("stage_seconds"), dict):
        missing = set(STAGES) - set(report["stage_seconds"])
        problems += [f"stage_seconds lacks {stage}" for stage in sorted(missing)]
    if isinstance(report.get("tokens_per_problem"), dict):
        missing = {*MODELS, "total"} - set(report["tokens_per_problem"])
        problems += [f"tokens_per_problem lacks {name}" for name in sorted(missing)]
    return problems


def write_json(report: dict[str, Any], path: Path) -> None:
    """report.json, indented."""
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- markdown
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def markdown(report: dict[str, Any], plots: list[str]) -> str:
    """report.md: the headline figures, baselines, targets, sweep, stages, tokens, load."""
    config, load = report["config"], report["load"]
    torch_b = report["baselines"].get("torch") or {}
    cot_b = report["baselines"].get("cot") or {}
    n, batch = report["problems"], report["batch_size"]
    lines = [
        "# Mycelium benchmark report",
        "",
        f"- device: {report['device']} ({report['cpu_count']} logical CPUs); "
        f"provider: {report['provider']}; "
        f"threads: {config.get('threads') or 'default'}",
        f"- artifacts: `{config['artifacts']}` ({report.get('precision')}); "
        f"checkpoint: `{config.get('checkpoint')}`",
        f"- data: `{config['data']}` (split {config['split']}), {n} problems; warm-up "
        f"{report['warmup_problems']} problems, then the timed stage",
        f"- load average at start: {', '.join(f'{x:.2f}' for x in load['start']['loadavg'])} "
        f"on {load['start']['cpu_count']} CPUs",
    ]
    for proc in load["start"].get("busy_processes", []):
        lines.append(f"  - busy at start: pid {proc['pid']} {proc['cpu_percent']:.0f}% CPU "
                     f"`{proc['cmd'][:100]}`")
    if config.get("spans_from"):
        lines.append(f"- **spans replaced** by those of the segmenter of `{config['spans_from']}` "
                     "(the measured segmenter still runs and is timed; search sizes realistic)")
    if config.get("note"):
        lines.append(f"- note: {config['note']}")
    lines += ["", "## Headline", ""]
    header = ["figure", "Mycelium (onnxruntime)"]
    columns: list[dict[str, Any]] = [{
        "problems_per_second": report["problems_per_second"],
        "latency_ms_p50": report["latency_ms_p50"],
        "latency_ms_p95": report["latency_ms_p95"],
        "latency_ms_mean": report["latency_ms_mean"],
        "tokens": report["tokens_per_problem"]["total"],
        "peak_rss_mb": report["peak_rss_mb"],
        "accuracy": report["accuracy"],
    }]
    for name, label, figures in (("torch", "same pipeline, PyTorch eager", torch_b),
                                 ("cot", "chain of thought (Qwen2.5-Coder-0.5B)", cot_b)):
        if name in report["baselines"]:
            header.append(label)
            columns.append({
                "problems_per_second": figures.get("problems_per_second"),
                "latency_ms_p50": figures.get("latency_ms_p50"),
                "latency_ms_p95": figures.get("latency_ms_p95"),
                "latency_ms_mean": figures.get("latency_ms_mean"),
                "tokens": (figures.get("tokens_per_problem") or {}).get("total"),
                "peak_rss_mb": figures.get("peak_rss_mb"),
                "accuracy": figures.get("accuracy"),
            })
    labels = (
        ("problems_per_second", f"problems/s (batch {batch})"),
        ("latency_ms_p50", "latency p50 ms (batch 1)"),
        ("latency_ms_p95", "latency p95 ms (batch 1)"),
        ("latency_ms_mean", "latency mean ms (batch 1)"),
        ("tokens", "token positions / problem"),
        ("peak_rss_mb", "peak RSS MiB"),
        ("accuracy", "accuracy"),
    )
    lines += _table(header, [[label] + [col[key] for col in columns] for key, label in labels])
    counts = [f"{report['latency_problems']} (Mycelium)"]
    counts += [f"{figures['latency_problems']} ({name})"
               for name, figures in (("PyTorch", torch_b), ("CoT", cot_b)) if figures.get(
                   "latency_problems")]
    lines.append(f"Batch-1 latency over the first {', '.join(counts)} problems; throughput "
                 f"over all {n}.")
    acc = report["accuracy_detail"]
    if acc["with_gold"]:
        lines.append(f"Accuracy: {acc['correct']}/{acc['with_gold']} problems with gold "
                     "(gold read after solving).")
    if torch_b.get("answers_agree_with_runtime") is not None:
        lines.append(f"PyTorch pipeline answers equal to the runtime's: "
                     f"{torch_b['answers_agree_with_runtime']:.1%}.")
    for name, figures in (("PyTorch pipeline", torch_b), ("CoT", cot_b)):
        if figures.get("model"):
            lines.append(f"{name}: {figures['model']}.")
    if cot_b.get("accuracy_detail"):
        detail = cot_b["accuracy_detail"]
        lines.append(f"CoT accuracy: {detail['correct']}/{detail['with_gold']}; "
                     f"{_fmt(cot_b.get('generated_tokens_per_problem'))} tokens written per "
                     f"problem (at most {cot_b.get('new_tokens')}); its solutions are in "
                     "cot_solutions.jsonl.")
    for name, figures in report["baselines"].items():
        if figures and "error" in figures:
            lines.append(f"Baseline {name} failed: {figures['error']}")
    lines += ["", "## Speedups", ""]
    lines += _table(["ratio", "value"], [
        ["throughput vs PyTorch eager (speedup_vs_torch)", report.get("speedup_vs_torch")],
        ["throughput vs CoT, both batched (speedup_vs_cot)", report.get("speedup_vs_cot")],
        ["batch-1 p50 latency vs CoT (latency_speedup_vs_cot)",
         report.get("latency_speedup_vs_cot")],
        ["CoT token positions / pipeline token positions",
         report.get("tokens_ratio_cot_over_pipeline")],
    ])
    lines += ["## Targets (against the baselines of this run)", ""]
    lines += _table(["target", "value", "holds"], [
        [t["target"], t["value"], "—" if t["holds"] is None else ("yes" if t["holds"] else "no")]
        for t in report["targets"]
    ])
    lines += ["## Throughput against batch size", ""]
    rows = [["Mycelium", r["batch_size"], r["problems"], r["seconds"], r["problems_per_second"]]
            for r in report["sweep"]]
    for name, figures in (("PyTorch pipeline", torch_b), ("CoT", cot_b)):
        rows += [[name, r["batch_size"], r["problems"], r["seconds"], r["problems_per_second"]]
                 for r in figures.get("sweep", [])]
    lines += _table(["system", "batch", "problems", "seconds", "problems/s"], rows)
    lines += [f"## Time per stage (timed pass, batch {batch}, {n} problems)", ""]
    rows = []
    for stage in STAGES:
        seconds = report["stage_seconds"][stage]
        torch_s = (torch_b.get("stage_seconds") or {}).get(stage)
        rows.append([stage, seconds, 1000.0 * seconds / n,
                     None if torch_s is None else 1000.0 * torch_s / n])
    lines += _table(["stage", "seconds", "ms / problem", "PyTorch ms / problem"], rows)
    lines += [report["stage_seconds_note"] + ".", ""]
    lines += ["## Token positions per problem", ""]
    tokens = report["tokens_per_problem"]
    rows = [[name, tokens.get(name), (torch_b.get("tokens_per_problem") or {}).get(name)]
            for name in (*MODELS, "writer", "total")]
    if cot_b:
        cot_tokens = cot_b["tokens_per_problem"]
        rows.append(["CoT (prompt + generated)", None, cot_tokens["total"]])
    lines += _table(["model", "Mycelium", "baseline"], rows)
    search = report["search"]
    lines.append(f"Search: {search['spans_per_problem']:.1f} spans, "
                 f"{search['groups_per_problem']:.1f} unique groups, "
                 f"{search['extractor_rows_per_problem']:.1f} extractor rows per problem.")
    lines.append("")
    if report.get("profile_top"):
        lines += ["## Profile (cProfile, one batched pass, not timed)", "", "```",
                  report["profile_top"].rstrip(), "```", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    end = load.get("end", {}).get("loadavg")
    if end:
        lines.append(f"Load average at the end: {', '.join(f'{x:.2f}' for x in end)}.")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict[str, Any], path: Path, plots: list[str]) -> None:
    """report.md."""
    path.write_text(markdown(report, plots), encoding="utf-8")
