"""A program writer's artifacts set, served like any other: `mycelium-export writer` builds
it from the tiny overfitted writer of test_program_writer (the embedded default's
segmenter copied in), and `mycelium-rt solve`, `diagnose`, `serve` and `Solver` answer
with it, giving the answers of the PyTorch beam over the same model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from fractions import Fraction as F
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from test_program_writer import QUESTION, cached  # noqa: E402, F401
from test_writer_onnx import _fp32_writer  # noqa: E402

from mycelium.executor import format_fraction  # noqa: E402
from mycelium.runtime.errors import ArtifactsError  # noqa: E402
from mycelium.runtime.manifest import load_manifest, model_kind, parse_manifest  # noqa: E402
from mycelium.train.program_writer import fit  # noqa: E402

START = "from mycelium.runtime.cli import main; main()"
QUESTIONS = [QUESTION, "Sam has 3 apples and buys 5 more. How many apples does he have?",
             "A box holds 12 pens. Ann buys 4 boxes and gives away 7 pens."]


@pytest.fixture(scope="module")
def artifacts(cached, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
              ) -> tuple[Path, Path]:
    """The overfitted tiny writer's run and its artifacts set, built by the CLI."""
    from mycelium.export.cli import main

    _, _, run = cached
    fit(run, epochs=150, threads=1)
    out = tmp_path_factory.mktemp("writer_set") / "set"
    done = CliRunner().invoke(main, ["writer", str(run), "-o", str(out), "--precision",
                                     "fp32"])
    assert done.exit_code == 0, done.output
    assert "writer" in done.output and "segmenter" in done.output and "wrote" in done.output
    return run, out


@pytest.fixture(scope="module")
def reference(artifacts) -> dict[str, tuple[F | None, float, list]]:
    """Per question: the pooled answer, its share and the programs of the PyTorch beam
    (float32) over the quantities the embedded default's segmenter finds."""
    from mycelium.runtime.equations import Sources
    from mycelium.runtime.solver import Solver
    from mycelium.runtime.spec import DEFAULT_CONSTANTS

    run, _ = artifacts
    spans = Solver.load(None, "cpu").segment(QUESTIONS)
    constants = tuple(F(text) for text in DEFAULT_CONSTANTS)
    sources = [Sources(tuple(s.value for s in found if s.value is not None), constants)
               for found in spans]
    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        programs = _fp32_writer(run, patch).beams(QUESTIONS, sources, width=6)
    out = {}
    for question, finished in zip(QUESTIONS, programs, strict=True):
        mass: dict[F, float] = defaultdict(float)
        for answer, score, _ in finished:
            mass[answer] += math.exp(score)
        pick = max(mass, key=mass.get) if mass else None
        out[question] = (pick, mass[pick] / sum(mass.values()) if mass else 0.0, finished)
    return out


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", START, *args], input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_the_manifest_names_a_segmenter_and_a_program_writer(artifacts) -> None:
    _, out = artifacts
    manifest = load_manifest(out)
    assert manifest.writes_programs and set(manifest.models) == {"segmenter", "writer"}
    assert model_kind("writer", manifest.models["writer"]) == "program_writer"
    assert model_kind("segmenter", manifest.models["segmenter"]) == "token_classifier"
    writer = manifest.models["writer"]
    assert writer.labels[-1] == "END" and "".join(writer.labels[:-1]) == "0123456789.-+*/=\n"
    assert writer.kv_cache is not None and writer.kv_cache.num_layers == 2
    assert manifest.mycelium["writer"]["prompt"] == "{question}\nEquations:\n"
    assert "answer_scorer" not in manifest.mycelium  # fitted on the span search's candidates
    assert manifest.parity["writer"]["status"] == "ok"
    assert manifest.parity["writer"]["max_abs_diff"] <= 1e-3
    assert "reused from" in manifest.parity["segmenter"]["note"]
    default = load_manifest(Path(__file__).resolve().parents[1] / "runtime" / "default_artifacts")
    assert manifest.models["segmenter"].sha256 == default.models["segmenter"].sha256


def test_a_set_that_breaks_the_contract_is_refused(artifacts) -> None:
    _, out = artifacts
    data = json.loads((out / "manifest.json").read_text())
    mixed = json.loads(json.dumps(data))
    mixed["models"]["classifier"] = mixed["models"]["segmenter"]
    with pytest.raises(ArtifactsError, match="exactly the models segmenter, writer"):
        parse_manifest(mixed)
    no_cache = json.loads(json.dumps(data))
    del no_cache["models"]["writer"]["kv_cache"]
    with pytest.raises(ArtifactsError, match="kv_cache disagree"):
        parse_manifest(no_cache)
    wrong_kind = json.loads(json.dumps(data))
    wrong_kind["models"]["writer"]["kind"] = "decoder"
    with pytest.raises(ArtifactsError, match="is not one of program_writer"):
        parse_manifest(wrong_kind)


def test_solve_answers_as_the_pytorch_beam_and_a_bad_line_stops_nothing(
        artifacts, reference, tmp_path: Path) -> None:
    _, out = artifacts
    lines = [json.dumps({"id": "a", "question": QUESTIONS[0]}), "{not json",
             json.dumps({"id": "b"}), json.dumps({"id": "c", "question": QUESTIONS[1]}),
             json.dumps({"id": "d", "question": QUESTIONS[2]})]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    done = _run("solve", str(source), "--artifacts", str(out), "--provider", "cpu", "--quiet")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["id"] for r in records] == ["a", 2, "b", "c", "d"]
    assert records[1]["error"].startswith("line 2: invalid JSON")
    assert records[2]["error"] == "line 3: no 'question' field"
    solved = {"a": QUESTIONS[0], "c": QUESTIONS[1], "d": QUESTIONS[2]}
    for record in records:
        if record["id"] not in solved:
            assert record["answer"] is None and record["program"] == []
            continue
        question = solved[record["id"]]
        pick, share, _ = reference[question]
        assert set(record) == {"id", "answer", "answer_exact", "program", "confidence", "error"}
        if pick is None:
            assert record["error"] == "no valid candidate program"
            continue
        assert record["error"] is None
        assert record["answer_exact"] == format_fraction(pick)
        assert record["confidence"] == pytest.approx(share, abs=1e-3)
        assert record["program"][-1]["result"] == record["answer_exact"]
        for step in record["program"]:
            for arg in step["args"]:
                if arg["source"] == "quantity":  # traced to the span of the question's text
                    start, end = arg["span"]
                    assert question[start:end] == arg["text"]
    assert records[0]["answer_exact"] == "72"  # the program the tiny writer was fitted to
    assert [step["op"] for step in records[0]["program"]] == ["DIV", "ADD"]


def test_diagnose_attributes_the_writer_losses(artifacts, reference, tmp_path: Path) -> None:
    _, out = artifacts
    finished = reference[QUESTIONS[0]][2]
    other = next(answer for answer, _, _ in finished if answer != F(72))  # beaten in the pool
    rows = [{"id": 1, "question": QUESTIONS[0], "gold": "72"},
            {"id": 2, "question": QUESTIONS[0], "gold": format_fraction(other)},
            {"id": 3, "question": QUESTIONS[0], "gold": "123456789"},
            {"id": 4, "question": "no gold here"}]
    source = tmp_path / "gold.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "report.json"
    done = _run("diagnose", str(source), "-o", str(report), "--artifacts", str(out),
                "--provider", "cpu")
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert [p["stage"] for p in data["problems"]] == [
        "correct", "scorer_picked_wrong", "wrong_program"]
    assert data["summary"]["problems"] == 3
    assert data["summary"]["lost_by_stage"]["wrong_program"] == 1
    assert data["summary"]["answer_scorer"] == "program writer"  # pooled beam probability


def test_serve_answers_as_solve(artifacts, reference) -> None:
    pytest.importorskip("httpx")
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from benchmarks.scale_out import Server

    _, out = artifacts
    server = Server("--artifacts", str(out), "--max-batch", "8")
    try:
        problems = [{"id": "a", "question": QUESTIONS[0]}, {"id": "bad"},
                    {"id": "c", "question": QUESTIONS[1]}]
        response = server.solve(problems)
        import httpx

        described = httpx.get(f"{server.url}/v1/info", timeout=30).json()
    finally:
        assert server.stop() == 0
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == ["a", "bad", "c"]
    assert results[1]["error"] == "problem 2: no 'question' field"
    for record, question in ((results[0], QUESTIONS[0]), (results[2], QUESTIONS[1])):
        pick = reference[question][0]
        assert record["answer_exact"] == (format_fraction(pick) if pick is not None else None)
    assert set(described["manifest"]["models"]) == {"segmenter", "writer"}
    assert described["answer_scorer"].startswith("program writer")


def test_the_python_solver_needs_no_torch(artifacts, reference) -> None:
    _, out = artifacts
    script = (
        "import sys\n"
        "from mycelium.runtime.solver import Solver\n"
        f"solver = Solver.load({str(out)!r}, 'cpu')\n"
        f"(result,) = solver.solve([{QUESTION!r}], trace=True)\n"
        "print(result.answer_exact, len(result.trace.valid_values))\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    answer, count = done.stdout.split()
    assert answer == "72" and int(count) == len(reference[QUESTION][2])


def test_the_int8_writer_is_weight_only_and_writes_the_program(
        artifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx
    from onnx import TensorProto

    from mycelium.export import embedding_rows
    from mycelium.export.writer import export_writer_set
    from mycelium.runtime.solver import Solver

    run, _ = artifacts
    monkeypatch.setattr(embedding_rows, "MIN_ROWS", 8)  # the tiny vocabulary counts as one
    report = export_writer_set(run, tmp_path / "int8", "int8", log=lambda _: None)
    manifest = load_manifest(report.output)
    assert manifest.precision == "int8" and manifest.parity["writer"]["status"] == "ok"
    graph = onnx.load(str(report.output / manifest.models["writer"].file),
                      load_external_data=False)
    ops = {node.op_type for node in graph.graph.node}
    assert "MatMulNBits" in ops and "MatMulInteger" not in ops  # weights only, not dynamic
    tables = [init for init in graph.graph.initializer if init.name.endswith(".int8_rows")]
    assert len(tables) == 1 and tables[0].data_type == TensorProto.INT8
    (result,) = Solver.load(report.output, "cpu").solve([QUESTION])
    assert result.answer_exact == "72"


def test_a_prompt_over_the_bound_is_an_error_record_and_the_batch_goes_on(artifacts) -> None:
    from dataclasses import replace

    from mycelium.runtime.solver import Solver

    _, out = artifacts
    solver = Solver.load(out, "cpu")
    bound = len(solver.writer.prompt_ids(QUESTION))
    solver.spec = replace(solver.spec, writer=replace(solver.spec.writer,
                                                      max_prompt_tokens=bound))
    longer = QUESTION + " " + QUESTION
    over = len(solver.writer.prompt_ids(longer))
    results = solver.solve([longer, QUESTION, longer], ids=["a", "b", "c"])
    assert [r.id for r in results] == ["a", "b", "c"]
    for result in (results[0], results[2]):
        assert result.answer is None
        assert result.error == (f"the writer's prompt is {over} tokens, over "
                                f"max_prompt_tokens {bound}")
    assert results[1].error is None and results[1].answer_exact == "72"


def _bench(artifacts: Path, out: Path, data: Path, *more: str):
    from benchmarks.run import main

    return CliRunner().invoke(main, ["--data", str(data), "--artifacts", str(artifacts),
                                     "--batch-size", "2", "--sweep", "2", "--warmup", "1",
                                     "--latency-limit", "1", "--baselines", "torch",
                                     "--out", str(out), *more])


def test_the_benchmark_runs_a_writer_set_beside_its_pytorch_writer(artifacts, reference,
                                                                    tmp_path: Path) -> None:
    from benchmarks.report import validate_report

    run, out = artifacts
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 72"}) + "\n"
                            for q in QUESTIONS[:2]), encoding="utf-8")
    missing = _bench(out, tmp_path / "none", data)
    assert missing.exit_code == 2
    assert "is a program writer's set; give its training run as --checkpoint RUN" in \
        missing.output
    done = _bench(out, tmp_path / "bench", data, "--checkpoint", str(run))
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "bench" / "report.json").read_text(encoding="utf-8"))
    assert validate_report(report, ("torch",)) == []
    torch_run = report["baselines"]["torch"]
    assert torch_run["precision"] == "bf16" and f"the writer of run {run}" in torch_run["model"]
    # the overfitted writer answers the first question as the PyTorch beam does, either way
    assert reference[QUESTION][0] == 72
    assert report["accuracy_detail"]["correct"] >= 1 and torch_run["accuracy"] >= 0.5
    assert torch_run["answers_agree_with_runtime"] >= 0.5
    # the writer's time and token positions are its own, not the extractor's
    tokens, seconds = report["tokens_per_problem"], report["stage_seconds"]
    program = len("48/2=24\n48+24=72\n")  # every character of the best program was fed
    assert tokens["writer"] > tokens["segmenter"] + program and tokens["extractor"] == 0
    assert seconds["write"] > 0 and seconds["extract"] == 0
    assert torch_run["tokens_per_problem"]["writer"] > program
