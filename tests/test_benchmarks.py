"""Smoke tests of the benchmark suite: the quick run's report is produced and well formed.

No speed threshold is ever checked here: figures depend on the machine and its load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks.data import accuracy, load_gold, load_problems  # noqa: E402
from benchmarks.report import BASELINE_FIELDS, FIXED_FIELDS, STAGES, validate_report  # noqa: E402

PROBLEMS = [
    {"id": "a", "question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "gold": 7},
    {"question": "A box holds 12 pens. How many pens are in 5 boxes?",
     "answer": "12 * 5 = <<12*5=60>>60\n#### 60"},
    {"id": 7, "question": "Sam earns $15 an hour for 8 hours. How much does he earn?"},
    {"question": "Ann reads 30 pages a day. How many days for a 240 page book?", "gold": "8"},
]


@pytest.fixture()
def problems_file(tmp_path: Path) -> Path:
    """A few problems, some with gold (GSM8K `answer` or `gold`), one without."""
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PROBLEMS), encoding="utf-8")
    return path


def test_data_keeps_gold_apart(problems_file: Path) -> None:
    problems = load_problems(problems_file)
    assert [p.id for p in problems] == ["a", 1, 7, 3]
    assert all(set(vars(p)) == {"id", "question"} for p in problems)  # no gold for solvers
    golds = load_gold(problems_file)
    assert [None if g is None else int(g) for g in golds] == [7, 60, None, 8]
    scored = accuracy(["7", "61", "100", None], golds)
    assert scored == {"accuracy": 1 / 3, "correct": 1, "with_gold": 3}
    assert accuracy(["1"], [None])["accuracy"] is None


def test_dev_split(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(25)))
    assert [p.question for p in load_problems(path, "dev")] == ["q0", "q10", "q20"]
    assert [p.question for p in load_problems(path, "dev", limit=2)] == ["q0", "q10"]


def test_torch_runners_match_onnx(tiny_checkpoint: Path, fp32_export) -> None:
    """The PyTorch-eager baseline computes what the exported graphs compute."""
    from benchmarks.torch_runners import load_torch_solver
    from mycelium.runtime.solver import Solver

    questions = [p["question"] for p in PROBLEMS]
    onnx = Solver.load(fp32_export.output, "cpu")
    eager = load_torch_solver(tiny_checkpoint, fp32_export.output)
    ids = [e.ids for e in onnx.tokenizers["extractor"].encode_batch(questions)]
    ref_logits, ref_state = onnx.extractor.prefill(ids)
    logits, state = eager.extractor.prefill(ids)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-3)
    step = ref_logits.argmax(axis=-1)
    np.testing.assert_allclose(eager.extractor.step(step, state)[0],
                               onnx.extractor.step(step, ref_state)[0], atol=1e-3)
    probs = eager.segmenter.label_probs(ids)
    for got, ref in zip(probs, onnx.segmenter.label_probs(ids), strict=True):
        np.testing.assert_allclose(got, ref, atol=1e-4)
    assert eager.stats.tokens == onnx.stats.tokens


QUICK_LIMIT = 2


def _quick(problems_file: Path, checkpoint: Path, artifacts: Path, out: Path) -> list[str]:
    """A quick run's options, on the session's tiny checkpoint and its export (not made
    again), with the fewest problems and tokens that still exercise every field: two
    problems (gold from `gold` and from a GSM8K `answer`), one timed alone, 8 CoT tokens."""
    return ["--quick", "--data", str(problems_file), "--checkpoint", str(checkpoint),
            "--artifacts", str(artifacts), "--limit", str(QUICK_LIMIT), "--latency-limit", "1",
            "--cot-tokens", "8", "--out", str(out)]


def test_quick_run_writes_well_formed_report(tmp_path: Path, problems_file: Path,
                                             tiny_checkpoint: Path, fp32_export) -> None:
    from click.testing import CliRunner

    from benchmarks.run import main

    out = tmp_path / "bench"
    result = CliRunner().invoke(
        main, [*_quick(problems_file, tiny_checkpoint, fp32_export.output, out),
               "--baselines", "torch,cot"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert validate_report(report, ("torch", "cot")) == []
    for name, types in FIXED_FIELDS.items():
        assert isinstance(report[name], types) and not isinstance(report[name], bool), name
    for name in (*BASELINE_FIELDS["torch"], *BASELINE_FIELDS["cot"]):
        assert isinstance(report[name], float) and report[name] > 0, name
    assert report["problems"] == QUICK_LIMIT and report["config"]["quick"] is True
    assert report["problems_per_second"] > 0 and report["peak_rss_mb"] > 0
    assert 0 < report["latency_ms_p50"] <= report["latency_ms_p95"]
    assert isinstance(report["accuracy"], float) and 0.0 <= report["accuracy"] <= 1.0
    assert report["accuracy_detail"]["with_gold"] == QUICK_LIMIT
    assert set(report["stage_seconds"]) == set(STAGES)
    assert all(isinstance(v, float) for v in report["stage_seconds"].values())
    assert {"segmenter", "classifier", "extractor", "total"} <= set(report["tokens_per_problem"])
    assert report["tokens_per_problem"]["total"] > 0
    assert report["provider"] in ("cpu", "cuda", "tensorrt") and report["device"]
    assert 0.0 <= report["baselines"]["torch"]["answers_agree_with_runtime"] <= 1.0
    for name in ("torch", "cot"):  # what every baseline carries
        summary = report["baselines"][name]
        assert isinstance(summary["accuracy"], float) and 0.0 <= summary["accuracy"] <= 1.0
        assert summary["problems_per_second"] > 0 and summary["peak_rss_mb"] > 0
        assert 0 < summary["latency_ms_p50"] <= summary["latency_ms_p95"]
        assert summary["model"]
    cot = report["baselines"]["cot"]
    assert "onnxruntime-genai" in cot["model"] and cot["provider"] == "onnxruntime-genai-cpu"
    assert 0 < cot["generated_tokens_per_problem"] <= 8  # --cot-tokens 8
    assert cot["accuracy_detail"]["with_gold"] == QUICK_LIMIT
    solutions = [json.loads(line) for line in
                 (out / "cot_solutions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [s["id"] for s in solutions] == ["a", 1]
    assert all(isinstance(s["solution"], str) for s in solutions)
    assert report["accuracy_minus_cot"] == pytest.approx(report["accuracy"] - cot["accuracy"])
    assert {t["field"] for t in report["targets"]} == {
        "accuracy_minus_cot", "speedup_vs_cot", "latency_speedup_vs_cot", "speedup_vs_torch"}
    assert (out / "report.md").read_text(encoding="utf-8").startswith("# Mycelium benchmark")
    if "plots_skipped" not in report:
        for name in ("accuracy_vs_speed.png", "throughput_vs_batch.png", "latency.png",
                     "stages.png"):
            assert (out / name).stat().st_size > 0


def test_failed_baseline_is_reported_not_fatal(
    tmp_path: Path, problems_file: Path, monkeypatch, tiny_checkpoint: Path, fp32_export
) -> None:
    from click.testing import CliRunner

    import benchmarks.run as bench

    real = bench.run_worker

    def failing_torch(job, work, timeout=None):
        if job["kind"] == "torch":
            raise RuntimeError("torch worker died")
        return real(job, work, timeout)

    monkeypatch.setattr(bench, "run_worker", failing_torch)
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        bench.main, [*_quick(problems_file, tiny_checkpoint, fp32_export.output, out),
                     "--baselines", "torch"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["speedup_vs_torch"] is None and report["problems_per_second"] > 0
    assert "Baseline torch failed: torch worker died" in (out / "report.md").read_text(
        encoding="utf-8")


def test_cot_shots_come_from_train_lines_only(tmp_path: Path) -> None:
    from benchmarks.cot import CotError, load_shots, messages

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}\n#### {i}"})
                            + "\n" for i in range(12)), encoding="utf-8")
    shots = load_shots(path, (1, 2))
    assert [s.question for s in shots] == ["q1", "q2"]
    chat = messages("new?", shots)
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant", "user"]
    assert chat[1]["content"] == "a1\n#### 1" and chat[-1]["content"] == "new?"
    with pytest.raises(CotError, match="dev line"):
        load_shots(path, (1, 10))
    with pytest.raises(CotError, match="no shots file"):
        load_shots(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(("text", "answer"), [
    ("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7", "7"),
    ("x\n#### $1,234.", "1234"),
    ("So the total is 96 + 48 = <<96+48=144>>144 clips altogether.", "144"),
    ("#### 72\nQuestion: 5 more", "72"),
    ("no number at all", None),
])
def test_cot_answer_is_the_answer_line_else_the_last_number(text: str, answer) -> None:
    from benchmarks.cot import answer_of

    assert answer_of(text) == answer


def test_a_worker_peak_rss_is_its_own_not_its_parents() -> None:
    """A parent holding 300 MB starts a worker: the worker's peak stays its own."""
    import subprocess
    import sys

    hold = bytearray(300 << 20)  # touched: resident in this (parent) process
    hold[:: 4096] = b"\x01" * len(hold[:: 4096])
    done = subprocess.run(
        [sys.executable, "-c", "from benchmarks.worker import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True, text=True, check=True)
    assert float(done.stdout) < 200
    del hold
