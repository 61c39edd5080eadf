"""PNG plots of a report: accuracy against speed, throughput against batch size, latency,
time per stage.

matplotlib is optional (the ``bench`` extra): without it no plot is drawn and the
report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import STAGES

SYSTEMS = (("runtime", "Mycelium (onnxruntime)", "tab:green"),
           ("torch", "same pipeline, PyTorch eager", "tab:orange"),
           ("cot", "chain of thought (Qwen2.5-Coder-0.5B)", "tab:red"))


def available() -> str | None:
    """None when matplotlib can draw, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except ImportError as exc:
        return f"matplotlib is not installed ({exc})"
    return None


def _series(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sweep, latencies and stage seconds per system present in the report."""
    out: dict[str, dict[str, Any]] = {
        "runtime": {"sweep": report["sweep"], "latency_ms": report.get("latency_ms", []),
                    "stage_seconds": report["stage_seconds"], "problems": report["problems"]}
    }
    for name in ("torch", "cot"):
        figures = report["baselines"].get(name)
        if figures and "error" not in figures:
            out[name] = {"sweep": figures.get("sweep", []),
                         "latency_ms": figures.get("latency_ms", []),
                         "stage_seconds": figures.get("stage_seconds"),
                         "problems": figures.get("problems"),
                         "accuracy": figures.get("accuracy"),
                         "problems_per_second": figures.get("problems_per_second"),
                         "latency_ms_p50": figures.get("latency_ms_p50")}
    out["runtime"].update(accuracy=report.get("accuracy"),
                          problems_per_second=report["problems_per_second"],
                          latency_ms_p50=report["latency_ms_p50"])
    return out


def _accuracy_against_speed(report: dict[str, Any], series: dict[str, dict[str, Any]],
                            out: Path) -> str:
    """Accuracy against problems/s (batched) and against batch-1 p50 latency, one point per
    system of this run (a system without accuracy is left out of the plot)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    panels = (("problems_per_second", "problems / second (batched), log scale"),
              ("latency_ms_p50", "latency p50, batch 1 (ms), log scale"))
    for ax, (field, xlabel) in zip(axes, panels, strict=True):
        for name, label, color in SYSTEMS:
            point = series.get(name, {})
            if point.get("accuracy") is None or not point.get(field):
                continue
            ax.scatter([point[field]], [100.0 * point["accuracy"]], s=70, color=color,
                       label=label, zorder=3)
            ax.annotate(f"{100.0 * point['accuracy']:.1f} %", (point[field],
                        100.0 * point["accuracy"]), textcoords="offset points", xytext=(6, 6))
        ax.set_xscale("log")
        ax.margins(x=0.25, y=0.2)  # room for the labels at both ends
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"accuracy (%), {report['problems']} problems")
    axes[0].set_ylim(bottom=0)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle("Accuracy against speed (up and right is better on the left panel, "
                 "up and left on the right)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "accuracy_vs_speed.png")


def draw(report: dict[str, Any], out: Path) -> list[str]:
    """Write the four PNGs into ``out``; returns their paths ([] without matplotlib)."""
    if available() is not None:
        return []
    import matplotlib.pyplot as plt

    series = _series(report)
    paths = [_accuracy_against_speed(report, series, out)]

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, label, color in SYSTEMS:
        if name in series and series[name]["sweep"]:
            rows = sorted(series[name]["sweep"], key=lambda r: r["batch_size"])
            ax.plot([r["batch_size"] for r in rows], [r["problems_per_second"] for r in rows],
                    marker="o", label=label, color=color)
    ax.set_xscale("log", base=2)
    sizes = sorted({r["batch_size"] for s in series.values() for r in s["sweep"]})
    ax.set_xticks(sizes, [str(size) for size in sizes])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("batch size (problems per call)")
    ax.set_ylabel("problems / second")
    ax.set_title("Throughput against batch size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(_save(fig, out / "throughput_vs_batch.png"))

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    data, labels, colors = [], [], []
    for name, label, color in SYSTEMS:
        if name in series and series[name]["latency_ms"]:
            data.append(series[name]["latency_ms"])
            labels.append(label.replace(", ", "\n").replace(" (", "\n("))
            colors.append(color)
    if data:
        try:
            parts = ax.boxplot(data, orientation="horizontal", patch_artist=True, whis=(5, 95))
        except TypeError:  # matplotlib < 3.10
            parts = ax.boxplot(data, vert=False, patch_artist=True, whis=(5, 95))
        ax.set_yticks(range(1, len(labels) + 1), labels)
        for patch, color in zip(parts["boxes"], colors, strict=True):
            patch.set_facecolor(color)
            patch.set_alpha(0.5)
        ax.set_xscale("log")
    ax.set_xlabel("latency per problem, batch 1 (ms, log scale; whiskers p5-p95)")
    ax.set_title("Latency distribution")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    paths.append(_save(fig, out / "latency.png"))

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    pipelines = [(name, label, color) for name, label, color in SYSTEMS[:2]
                 if name in series and series[name]["stage_seconds"]]
    height = 0.8 / max(1, len(pipelines))
    for offset, (name, label, color) in enumerate(pipelines):
        problems = max(1, series[name]["problems"] or 1)
        values = [1000.0 * series[name]["stage_seconds"].get(s, 0.0) / problems for s in STAGES]
        ax.barh([i + offset * height for i in range(len(STAGES))], values, height=height,
                label=label, color=color)
    ax.set_yticks([i + height * (len(pipelines) - 1) / 2 for i in range(len(STAGES))], STAGES)
    ax.invert_yaxis()
    ax.set_xlabel(f"ms per problem (batch {report['batch_size']}); tokenize also inside "
                  "classify/extract")
    ax.set_title("Time per pipeline stage")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(_save(fig, out / "stages.png"))
    return paths


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
