"""The solve path end to end: weightless fake specialists, then the real CLI on tiny artifacts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_replays

from mycelium.executor import Arg
from mycelium.runtime import Solver
from mycelium.runtime.cli import main
from mycelium.runtime.extract import BEAM_DEPTH, branch_first_token
from mycelium.runtime.grammar import parse_args
from mycelium.runtime.manifest import load_manifest
from mycelium.runtime.models import DecoderState, top_k
from mycelium.runtime.readings import Variant, distinct_readings
from mycelium.runtime.render import describe
from mycelium.runtime.spec import SEGMENTER_LABELS
from mycelium.runtime.templates import extractor_suffix


class _State:
    def __init__(self, rows: int):
        self.rows = rows

    def take(self, rows: np.ndarray) -> _State:
        return _State(len(rows))


class FakeSegmenter:
    """Marks every run of digit tokens as one quantity (a stand-in for a trained C1)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def label_probs(self, sequences: list[list[int]]) -> list[np.ndarray]:
        width = len(SEGMENTER_LABELS)
        return [np.eye(width)[labels] for labels in self.label_ids(sequences)]

    def label_ids(self, sequences: list[list[int]]) -> list[np.ndarray]:
        out = []
        for seq in sequences:
            labels, previous = [], False
            for token in seq:
                text = self.tokenizer.decode([token])
                digits = text.strip().isdigit()
                labels.append(0 if not digits else (2 if previous and not text[0].isspace() else 1))
                previous = digits
            out.append(np.array(labels))
        return out


class FakeClassifier:
    """Always reads ADD."""

    def prefill(self, sequences, state=None):
        logits = np.tile(np.array([[3.0, 0.0, 0.0, 0.0]], dtype=np.float32), (len(sequences), 1))
        return logits, _State(len(sequences))


class RejectingClassifier:
    """Gives the reject label (a fifth column) the most mass, then ADD."""

    def prefill(self, sequences, state=None):
        row = np.array([[2.0, 0.0, 0.0, 0.0, 5.0]], dtype=np.float32)
        return np.tile(row, (len(sequences), 1)), _State(len(sequences))


class FakeExtractor:
    """Writes the group's spans as arguments (R1 for a single span, the tail adds R1 R2)."""

    def __init__(self, tokenizer, eos: int):
        self.tokenizer, self.eos = tokenizer, eos

    def prefill(self, sequences, state=None):
        self.answers = []
        for seq in sequences:
            text = self.tokenizer.decode(seq)
            names = [w.split("=")[0] for w in text.split()]  # " Q0=3" or " Q0" items
            items = [w for w in names if w.startswith("Q") and w[1:].isdigit()]
            args = items if len(items) > 1 else (items + ["R1"] if items else ["R1", "R2"])
            self.answers.append(self.tokenizer.encode_batch([" " + " ".join(args)])[0].ids)
        return np.zeros((len(sequences), 4), dtype=np.float32), _State(len(sequences))

    def greedy(self, logits, state, *, eos_id, max_new_tokens):
        return self.answers, np.full(len(self.answers), -0.1)


@pytest.fixture(scope="module")
def artifacts(fp32_export) -> Path:
    return fp32_export.output


def _fake(artifacts: Path, search: tuple[str, ...] = ()) -> Solver:
    manifest = load_manifest(artifacts)
    real = Solver(artifacts, manifest, "cpu", None)
    runners = (
        FakeSegmenter(real.tokenizers["segmenter"]),
        FakeClassifier(),
        FakeExtractor(real.tokenizers["extractor"], real.eos_id),
    )
    return Solver(artifacts, manifest, "cpu", None, runners=runners, search=search)


@pytest.fixture(scope="module")
def fake_solver(artifacts: Path) -> Solver:
    return _fake(artifacts)


def test_search_executor_and_scorer_answer_exactly(fake_solver: Solver) -> None:
    (result,) = fake_solver.solve(["Tom has 3 apples and buys 4 more. How many apples?"])
    assert result.error is None
    assert result.answer == 7 and result.answer_exact == "7"
    step = result.program[-1]
    assert step["op"] == "ADD" and step["result"] == "7"
    quantities = [arg for s in result.program for arg in s["args"] if arg["source"] == "quantity"]
    assert {a["text"] for a in quantities} == {"3", "4"}
    for arg in quantities:
        start, end = arg["span"]
        assert "Tom has 3 apples and buys 4 more. How many apples?"[start:end] == arg["text"]
    assert 0 < result.confidence <= 1
    assert "answer: 7" in describe(result)


def test_reject_label_is_never_extracted_and_lowers_scores(artifacts: Path) -> None:
    manifest = load_manifest(artifacts)
    real = Solver(artifacts, manifest, "cpu", None)
    runners = (FakeSegmenter(real.tokenizers["segmenter"]), RejectingClassifier(),
               FakeExtractor(real.tokenizers["extractor"], real.eos_id))
    solver = Solver(artifacts, manifest, "cpu", None, runners=runners)
    solver.operations = (*solver.operations, "NONE")
    (result,) = solver.solve(["Tom has 3 apples and buys 4 more. How many apples?"],
                             trace=True)
    assert result.answer == 7
    readings = [v for found in result.trace.variants.values() for v in found]
    assert readings and all(v.op != "NONE" for v in readings)
    ops = {v.op for v in readings}
    assert "ADD" in ops and len(ops) == 2  # the two best real operations
    add = max(v.logprob for v in readings if v.op == "ADD")
    assert add < np.log(np.exp(2.0) / (np.exp(2.0) + 3 + np.exp(5.0))) + 1e-6
    # the reject mass of the span-free group: its word on ending with a learned step or not
    from mycelium.runtime.verifier import FEATURES

    none_logprob = 5.0 - np.log(np.exp(2.0) + 3 + np.exp(5.0))
    column = FEATURES.index("tail_agreement")
    learned = FEATURES.index("steps_1")  # a one-step "3 + 4" has no learned step
    agreements = {round(v[column], 4) for v in result.trace.candidate_features}
    assert round(none_logprob, 4) in agreements
    assert agreements <= {round(none_logprob, 4), round(np.log(-np.expm1(none_logprob)), 4)}
    assert any(v[learned] == 1.0 and v[column] == pytest.approx(none_logprob, abs=1e-4)
               for v in result.trace.candidate_features)
    # each reading's log-probability taken apart: is a step, which operation, arguments
    is_step = float(np.log(-np.expm1(none_logprob)))
    add_given_step = 2.0 - float(np.log(np.exp(2.0) + 3))
    for reading in readings:
        parts = reading.parts
        assert parts.is_step == pytest.approx(is_step, abs=1e-5)
        assert parts.is_step + parts.op_given_step + parts.args == pytest.approx(reading.logprob)
        if reading.op == "ADD":
            assert parts.op_given_step == pytest.approx(add_given_step, abs=1e-5)
    for vector in result.trace.candidate_features:
        assert vector[FEATURES.index("is_step_mean")] == pytest.approx(is_step, abs=1e-5)
        assert vector[FEATURES.index("is_step_min")] == pytest.approx(is_step, abs=1e-5)
        assert vector[FEATURES.index("op_given_step_mean")] <= add_given_step + 1e-5


def test_batch_keeps_order_and_ids(fake_solver: Solver) -> None:
    questions = ["Add 2 and 5.", "No numbers here at all?", "Sum 10 and 20 and 30."]
    results = fake_solver.solve(questions, ids=["a", "b", "c"])
    assert [r.id for r in results] == ["a", "b", "c"]
    assert results[0].answer == 7
    assert results[1].answer is None and results[1].error
    assert results[2].answer == 60


def test_python_api_on_tiny_artifacts(artifacts: Path) -> None:
    solver = Solver.load(artifacts=artifacts, provider="auto")
    results = solver.solve(["Tom has 3 apples and buys 4 more.", "Sam has 5 pens."])
    assert len(results) == 2
    for result in results:
        record = result.to_record()
        assert set(record) == {"id", "answer", "answer_exact", "program", "confidence", "error"}
        assert_replays(record)


def test_branch_first_token_forces_each_rows_top_tokens() -> None:
    logits = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], dtype=np.float32))
    state = DecoderState(np.ones((2, 4), dtype=np.int64), np.array([4, 4]),
                         [np.arange(2 * 3).reshape(2, 3, 1, 1).astype(np.float32)])
    forced, branched, first = branch_first_token(logits, state, 2)
    assert forced.argmax(axis=1).tolist() == [1, 2, 0, 2]  # best first, row by row
    assert np.allclose(np.exp(first), [0.6, 0.3, 0.5, 0.3])
    assert branched.past[0][:, :, 0, 0].tolist() == [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]]


@pytest.mark.parametrize("k", [1, 2, 3, 6, 8])
def test_top_k_is_a_stable_sorts_head_ties_included(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = rng.normal(size=(6, 6)).astype(np.float32)
    scores[0] = 0.0  # all tied
    scores[1, 4] = scores[1, 2] = scores[1].max() + 1  # tied best
    scores[2, 5] = scores[2, 1]  # a tie somewhere
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    assert top_k(scores, k).tolist() == expected.tolist()


def test_arg_readings_give_more_readings_per_group(artifacts: Path) -> None:
    """Two first-token branches per (group, operation): up to twice the readings, and the
    greedy reading is still among them with the same log-probability."""
    questions = ["Tom has 3 apples and buys 4 more.", "Sam has 5 pens and 7 cups."]
    one = Solver.load(artifacts=artifacts).solve(questions, trace=True)
    two = Solver.load(artifacts=artifacts, search=("arg_readings=2",)).solve(questions,
                                                                            trace=True)
    for a, b in zip(one, two, strict=True):
        for group, found in a.trace.variants.items():
            more = b.trace.variants[group]
            assert len(more) == 2 * len(found)
            for variant in found:
                assert any(v.op == variant.op and v.text == variant.text
                           and abs(v.logprob - variant.logprob) < 1e-3 for v in more)


def test_arg_beam_reads_the_beam_search_best_sequences(artifacts: Path) -> None:
    """With ``arg_beam`` the readings of a (group, operation) are the beam search's best
    sequences (``DecoderRunner.beam``), best first; without it, the first-token branches."""
    questions = ["Tom has 3 apples and buys 4 more.", "Sam has 5 pens and 7 cups."]
    rows = [(0, [(0, "3"), (1, "4")], "ADD"), (1, [], "MUL"), (1, [(1, "7")], "SUB")]
    beamed = Solver.load(artifacts=artifacts, search=("arg_readings=3", "arg_beam=true"))
    prefix, _ = beamed.prefix_states("extractor", questions)
    got = beamed.extract(prefix, rows, 3)
    suffixes = beamed.specialist("extractor").suffix_ids([
        extractor_suffix(beamed.spec.templates, items, op) for _, items, op in rows],
        beamed.spec.max_suffix_tokens)
    logits, state = beamed.extractor.prefill(suffixes, prefix.take(np.array([0, 1, 1])))
    found = beamed.extractor.beam(logits, state, eos_id=beamed.eos_id,
                                  max_new_tokens=beamed.spec.max_new_tokens, width=3,
                                  depth=BEAM_DEPTH)
    decode = beamed.tokenizers["extractor"].decode
    assert len(got) == len(rows)
    for readings, expected in zip(got, found, strict=True):
        assert [text for text, _ in readings] == [decode(ids) for ids, _ in expected]
        np.testing.assert_allclose([lp for _, lp in readings], [lp for _, lp in expected],
                                   atol=1e-4)
        assert [lp for _, lp in readings] == sorted((lp for _, lp in readings), reverse=True)
    branched = Solver.load(artifacts=artifacts, search=("arg_readings=3",))
    prefix, _ = branched.prefix_states("extractor", questions)
    first = [readings[0] for readings in branched.extract(prefix, rows, 1)]
    assert [readings[0][0] for readings in branched.extract(prefix, rows, 3)] == [
        text for text, _ in first]  # the top branch is the greedy reading


def test_stats_count_the_extractor_rows_fed(artifacts: Path) -> None:
    """``Stats.extractor_rows``: every (group, operation) decoded, times its readings;
    ``min_op_prob`` keeps only the groups' first operations when it is near 1."""
    questions = ["Tom has 3 apples and buys 4 more.", "Sam has 5 pens and 7 cups."]
    counts = {}
    for name, search in (("one", ()), ("two", ("arg_readings=2",)),
                         ("first_ops", ("min_op_prob=0.999",))):
        solver = Solver.load(artifacts=artifacts, search=search)
        solver.solve(questions)
        counts[name] = solver.stats.extractor_rows
    ops = Solver.load(artifacts=artifacts).spec.search.ops_per_group
    assert counts["one"] > 0 and counts["two"] == 2 * counts["one"]
    assert counts["first_ops"] * ops == counts["one"]


def test_reorderings_of_a_commutative_step_count_once() -> None:
    """``MUL Q1 Q0`` after ``MUL Q0 Q1`` is the same step: it is dropped so that the next
    reading with another value gets its place; ``SUB`` keeps both orders."""
    found = [Variant(op, parse_args(text), lp, text) for op, text, lp in [
        ("MUL", "Q1 Q0", -0.5), ("MUL", "Q0 Q1", -0.1), ("MUL", "Q0 R1", -0.9),
        ("SUB", "Q0 Q1", -1.0), ("SUB", "Q1 Q0", -1.2), ("ADD", "Q9 +", -0.05)]]
    kept = distinct_readings(found)
    assert [(v.op, v.text) for v in kept] == [
        ("MUL", "Q0 Q1"), ("MUL", "Q0 R1"), ("SUB", "Q0 Q1"), ("SUB", "Q1 Q0")]
    assert kept[1].args == (Arg.quantity(0), Arg.result(1))


def test_tail_settings_widen_only_the_span_free_group(artifacts: Path) -> None:
    """``tail_ops``/``tail_arg_readings`` read the one span-free group per problem with more
    operations and branches; every other group keeps the general settings and readings."""
    questions = ["Tom has 3 apples and buys 4 more.", "Sam has 5 pens and 7 cups."]
    base = Solver.load(artifacts=artifacts)
    wide = Solver.load(artifacts=artifacts,
                       search=("tail_ops=3", "tail_arg_readings=2", "tail_readings=6"))
    search = base.spec.search
    for a, b in zip(base.solve(questions, trace=True), wide.solve(questions, trace=True),
                    strict=True):
        for group, found in a.trace.variants.items():
            more = b.trace.variants[group]
            if group:
                assert [(v.op, v.text) for v in more] == [(v.op, v.text) for v in found]
            else:
                assert len(found) == search.ops_per_group * search.arg_readings
                assert len(more) == 3 * 2
                assert {v.op for v in more} > {v.op for v in found}


def _run(args: list[str], stdin: str | None = None):
    return CliRunner().invoke(main, args, input=stdin)


def test_cli_one_record_per_line_in_order(artifacts: Path, tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "x", "question": "Tom has 3 apples and buys 4 more."}),
        "not json",
        "",
        json.dumps({"question": ""}),
        json.dumps({"question": "Sam has 5 pens.", "answer": "#### 5"}),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = _run(["solve", str(source), "-o", str(out), "--artifacts", str(artifacts)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["x", 2, 4, 5]
    assert "invalid JSON" in records[1]["error"] and "empty" in records[2]["error"]
    assert "4 problems" in result.output  # the summary line (stderr is mixed in by CliRunner)


def test_min_confidence_withholds_only_the_less_confident_answers(
        fake_solver: Solver, artifacts: Path, tmp_path: Path) -> None:
    from mycelium.runtime.answers import abstain_below

    questions = ["Tom has 3 apples and buys 4 more. How many apples?",
                 "Sam has 5 pens and 2 cups. How many?", "no number here"]
    records = [r.to_record() for r in fake_solver.solve(questions)]
    answered = sorted(r["confidence"] for r in records if r["answer"] is not None)
    assert answered and records[-1]["answer"] is None
    for threshold, withheld in ((answered[0], False), (answered[-1] + 1e-6, True)):
        for was in records:
            now = abstain_below(was, threshold)
            if was["answer"] is None or not withheld:
                assert now == was  # an unanswered record, or confident enough: unchanged
                continue
            assert now["answer"] is None and now["answer_exact"] is None
            assert now["program"] == was["program"] and now["confidence"] == was["confidence"]
            assert now["error"] == (f"abstained: confidence {was['confidence']:.3f} below "
                                    f"--min-confidence {threshold:g}")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"question": questions[0]}) + "\n")
    ok = _run(["solve", str(source), "--artifacts", str(artifacts), "--quiet",
               "--min-confidence", "0.5"])
    assert ok.exit_code == 0, ok.output
    bad = _run(["solve", str(source), "--artifacts", str(artifacts), "--min-confidence", "2"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "--min-confidence" in bad.output


def test_cli_stdin_to_stdout(artifacts: Path) -> None:
    result = _run(["solve", "--artifacts", str(artifacts), "--quiet"],
                  stdin='{"question": "Tom has 3 apples."}\n')
    assert result.exit_code == 0
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["id"] == 1


def test_cli_text_and_info(artifacts: Path) -> None:
    for question in ("Tom has 3 apples.", "Tom has 3 apples and buys 4 more. How many?"):
        text = _run(["solve", "--artifacts", str(artifacts), "--text", question])
        assert text.exit_code == 0, text.output
        (expected,) = Solver.load(artifacts=artifacts, provider="cpu").solve([question])
        assert text.stdout.strip() == describe(expected)  # what the API says, rendered
        first = text.stdout.splitlines()[0]
        if expected.error is None:
            assert first.startswith(f"answer: {expected.answer_exact} ")
        else:
            assert first == f"error: {expected.error}"
    info = _run(["info", "--artifacts", str(artifacts)])
    payload = json.loads(info.output)
    assert payload["artifacts"] == str(artifacts)
    assert payload["providers"]["chosen"] == "cpu"
    assert "CPUExecutionProvider" in payload["providers"]["available"]
    assert payload["manifest"]["models"]["classifier"]["labels"] == ["ADD", "SUB", "MUL", "DIV"]
    assert payload["manifest"]["models"]["segmenter"]["architecture"] == "qwen2"
    assert payload["manifest"]["models"]["segmenter"]["tokenizer"] == "segmenter.tokenizer.json"
    assert payload["answer_scorer"].startswith("default ranking")
    overridden = _run(["info", "--artifacts", str(artifacts), "--search", "max_candidates=30"])
    assert json.loads(overridden.output)["search"]["max_candidates"] == 30


@pytest.mark.parametrize("command", [[], ["solve"], ["info"], ["diagnose"]])
def test_help(command: list[str]) -> None:
    result = _run([*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_missing_artifacts_is_one_line(tmp_path: Path) -> None:
    result = _run(["solve", "--artifacts", str(tmp_path / "nope"), "--text", "1 and 2"])
    assert result.exit_code != 0
    assert "folder not found" in result.output and "Traceback" not in result.output


def test_unreadable_input_is_one_line(artifacts: Path, tmp_path: Path) -> None:
    result = _run(["solve", str(tmp_path / "missing.jsonl"), "--artifacts", str(artifacts)])
    assert result.exit_code != 0 and "cannot read input" in result.output


def test_tampered_artifact_is_refused(artifacts: Path, tmp_path: Path) -> None:
    copy = tmp_path / "art"
    shutil.copytree(artifacts, copy)
    with open(copy / "segmenter.tokenizer.json", "ab") as handle:
        handle.write(b"\n ")  # still a valid tokenizer: only the hash tells
    result = _run(["info", "--artifacts", str(copy)])
    assert result.exit_code != 0
    assert "sha256 mismatch for 'segmenter.tokenizer.json'" in result.output
    assert _run(["info", "--artifacts", str(copy), "--no-verify"]).exit_code == 0


def test_truncated_graph_is_one_line(artifacts: Path, tmp_path: Path) -> None:
    copy = tmp_path / "art"
    shutil.copytree(artifacts, copy)
    data = (copy / "classifier.onnx").read_bytes()
    (copy / "classifier.onnx").write_bytes(data[: len(data) // 2])
    result = _run(["info", "--artifacts", str(copy), "--no-verify"])
    assert result.exit_code != 0 and "cannot load classifier.onnx" in result.output
    assert "Traceback" not in result.output


def test_path_escaping_manifest_is_refused(artifacts: Path, tmp_path: Path) -> None:
    copy = tmp_path / "art"
    shutil.copytree(artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"]["segmenter"]["file"] = "../segmenter.onnx"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = _run(["info", "--artifacts", str(copy)])
    assert result.exit_code != 0 and "refused file name '../segmenter.onnx'" in result.output


def test_no_torch_at_serve_time(artifacts: Path, tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from mycelium.runtime import Solver\n"
        f"s = Solver.load({str(artifacts)!r}, 'cpu')\n"
        "s.solve(['Tom has 3 apples and buys 4 more.'])\n"
        "from mycelium.runtime.cli import main\n"
        "bad = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('clean')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "clean" in done.stdout


def test_embedded_default_solves_without_artifacts(monkeypatch) -> None:
    monkeypatch.delenv("MYCELIUM_ARTIFACTS", raising=False)
    result = _run(["solve", "--quiet"], stdin='{"id": 1, "question": "Tom has 12 apples and '
                  'buys 7 more. How many apples does he have?"}\n')
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["id"] == 1
    assert_replays(record)
    (expected,) = Solver.load().solve(["Tom has 12 apples and buys 7 more. How many apples "
                                       "does he have?"], ids=[1])
    assert record == json.loads(json.dumps(expected.to_record()))  # the API's answer


def test_environment_variable_selects_artifacts(artifacts: Path, monkeypatch) -> None:
    monkeypatch.setenv("MYCELIUM_ARTIFACTS", str(artifacts))
    payload = json.loads(_run(["info"]).output)
    assert payload["artifacts"] == str(artifacts)


@pytest.mark.parametrize(("readings", "stage"),
                         [(1, "wrong_operation"), (2, "scorer_picked_wrong")])
def test_diagnose_attributes_and_labels_the_oracle(
    artifacts: Path, tmp_path: Path, readings: int, stage: str
) -> None:
    """The fake reads ADD first: with one reading per group the loss is the operation's;
    with two, SUB (second) gives the gold 5 as a valid candidate that the scorer passes by."""
    from mycelium.runtime.diagnose import run_diagnosis

    fake_solver = _fake(artifacts, (f"readings_per_group={readings}",))
    source = tmp_path / "gold.jsonl"
    rows = [
        {"id": "right", "question": "Tom has 3 apples and buys 4 more. How many apples?",
         "answer": "He has 3+4=<<3+4=7>>7 apples.\n#### 7"},
        {"id": "wrong-op", "question": "Tom has 9 apples and eats 4. How many are left?",
         "answer": "He has 9-4=<<9-4=5>>5 left.\n#### 5"},
        {"id": "no-gold", "question": "Add 1 and 2."},
        {"id": "plain-gold", "question": "Add 2 and 2.", "gold": 4},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "report.json"
    summary = run_diagnosis(fake_solver, str(source), str(report))
    assert summary["problems"] == 3  # the record without gold is not counted
    assert summary["lost_by_stage"]["correct"] == 2
    assert summary["lost_by_stage"][stage] == 1
    assert summary["oracle_gold_spans"]["label"].startswith("ORACLE")
    assert summary["answer_scorer"] == "default"
    problems = json.loads(report.read_text())["problems"]
    stages = {p["id"]: p["stage"] for p in problems}
    assert stages == {"right": "correct", "wrong-op": stage, "plain-gold": "correct"}
    # the gold SUB reading is the group's second: cut with one reading kept, else executed
    reach = {p["id"]: p.get("oracle_gold_readings") for p in problems}
    expected = "gold_reading_cut" if readings == 1 else "gold_value_among_candidates"
    assert reach == {"right": "gold_value_among_candidates", "wrong-op": expected,
                     "plain-gold": None}
    assert summary["oracle_gold_spans"]["gold_readings"][expected] == 1 + (readings == 2)
    # every answered problem's confidence is reported and summarized against its outcome
    confidences = {p["id"]: p["confidence"] for p in problems}
    assert all(0.0 < c <= 1.0 for c in confidences.values())
    everything = summary["by_confidence"]["selective"][-1]
    assert everything == {"coverage": 1.0, "problems": 3, "accuracy": round(2 / 3, 4),
                          "min_confidence": round(min(confidences.values()), 4)}
    assert sum(b["problems"] for b in summary["by_confidence"]["bands"]) == 3


def test_diagnose_without_the_oracle_pass(artifacts: Path, tmp_path: Path) -> None:
    """--no-oracle: the same attribution, no gold-span pass, the same expressible share."""
    from mycelium.runtime.diagnose import run_diagnosis

    fake_solver = _fake(artifacts, ("readings_per_group=2",))
    source = tmp_path / "gold.jsonl"
    source.write_text(json.dumps(
        {"id": "sub", "question": "Tom has 9 apples and eats 4. How many are left?",
         "answer": "He has 9-4=<<9-4=5>>5 left.\n#### 5"}) + "\n")
    with_pass = run_diagnosis(fake_solver, str(source), str(tmp_path / "a.json"))
    without = run_diagnosis(fake_solver, str(source), str(tmp_path / "b.json"), oracle=False)
    assert with_pass["oracle_gold_spans"]["problems"] == 1
    assert without["oracle_gold_spans"]["problems"] == 0
    assert without["lost_by_stage"] == with_pass["lost_by_stage"]
    assert without["search_space_ceiling"] == with_pass["search_space_ceiling"]
    (entry,) = json.loads((tmp_path / "b.json").read_text())["problems"]
    assert "oracle_gold_spans_stage" not in entry


@pytest.mark.parametrize(("gap", "stage"),
                         [(0, "outside_search_space"), (1, "wrong_operation")])
def test_diagnose_says_why_the_search_cannot_express_a_problem(
    artifacts: Path, tmp_path: Path, gap: int, stage: str
) -> None:
    """15*4, then +3: the first group skips the second quantity; the gold program is
    derived for the solver's own search, so with a gap of one it is within reach."""
    from mycelium.runtime.diagnose import run_diagnosis

    source = tmp_path / "gold.jsonl"
    source.write_text(json.dumps({
        "id": "skip", "question": "Tom has 15 pens, 3 cups and 4 boxes. How many in all?",
        "answer": "15*4=<<15*4=60>>60. 60+3=<<60+3=63>>63\n#### 63"}) + "\n")
    report = tmp_path / "report.json"
    summary = run_diagnosis(_fake(artifacts, (f"group_gap={gap}",)), str(source), str(report))
    assert summary["lost_by_stage"][stage] == 1
    (problem,) = json.loads(report.read_text())["problems"]
    if gap == 0:
        assert summary["outside_search_space_reasons"] == {"noncontiguous_group": 1}
        assert problem["unreachable_reason"] == "noncontiguous_group"
    else:
        assert summary["outside_search_space_reasons"] == {}
        assert "unreachable_reason" not in problem
        assert summary["search_space_ceiling"]["value"] == 1.0


def test_gold_reading_reach_names_the_worst_gold_step() -> None:
    from types import SimpleNamespace

    from mycelium.runtime.diagnose import gold_reading_reach
    from mycelium.runtime.results import SolveResult, SolveTrace
    from mycelium.runtime.spec import SearchSpec

    def reading(op: str, text: str, logprob: float) -> Variant:
        return Variant(op, parse_args(text), logprob, text)

    def step(op: str, args: str, group: tuple[int, ...]) -> SimpleNamespace:
        return SimpleNamespace(op=op, args=args.split(), group=list(group))

    variants = {(0,): [reading("MUL", "Q0 C2", -0.1), reading("DIV", "Q0 C2", -0.5),
                       reading("MUL", "Q0 R1", -0.9)],
                (1,): [reading("ADD", "R1 Q1", -0.2)]}
    result = SolveResult(id=1, trace=SolveTrace(variants=variants, valid_values=[Fraction(6)]))
    search = SearchSpec(readings_per_group=2)

    def reach(*steps: SimpleNamespace, gold: int = 7) -> str:
        return gold_reading_reach(result, Fraction(gold), SimpleNamespace(program=list(steps)),
                                  search)

    assert reach(step("MUL", "Q0 C2", (0,)), step("ADD", "Q1 R1", (1,))) == "gold_readings_kept"
    assert reach(step("MUL", "Q0 R1", (0,))) == "gold_reading_cut"  # third of two kept
    assert reach(step("MUL", "Q0 C3", (0,)), step("ADD", "Q1 R1", (1,))) == "arguments_not_read"
    assert reach(step("MUL", "Q0 C3", (0,)), step("SUB", "R1 Q1", (1,))) == "operation_not_read"
    assert reach(step("SUB", "R1 Q1", (1,)), gold=6) == "gold_value_among_candidates"


def test_diagnose_reads_commutative_arguments_in_any_order() -> None:
    from mycelium.runtime.diagnose import _same_arguments

    assert _same_arguments("MUL", "R1 Q0", ["Q0", "R1"])
    assert _same_arguments("ADD", " Q2  Q1 ", ["Q1", "Q2"])
    assert not _same_arguments("SUB", "R1 Q0", ["Q0", "R1"])
    assert not _same_arguments("MUL", "Q0 Q0", ["Q0", "R1"])
    assert not _same_arguments("MUL", None, ["Q0"])


def test_model_kind_is_the_manifests_or_derived_for_an_older_one() -> None:
    """The runner kind: a manifest's ``kind`` when it has one (checked against the role
    and the KV cache), else derived from the graph (the embedded default predates it)."""
    from mycelium.runtime.artifacts import resolve_artifacts
    from mycelium.runtime.errors import ArtifactsError
    from mycelium.runtime.manifest import model_kind, parse_manifest

    data = json.loads((resolve_artifacts(None) / "manifest.json").read_text())
    assert all("kind" not in model for model in data["models"].values())
    manifest = parse_manifest(data)
    assert {name: model_kind(name, spec) for name, spec in manifest.models.items()} == {
        "segmenter": "token_classifier", "classifier": "span_group_classifier",
        "extractor": "decoder"}
    data["models"]["classifier"]["kind"] = "span_group_classifier"
    assert parse_manifest(data).models["classifier"].kind == "span_group_classifier"
    for wrong in ("decoder", "token_classifier", "lstm"):  # no cache; not a classifier's
        data["models"]["classifier"]["kind"] = wrong
        with pytest.raises(ArtifactsError, match="kind"):
            parse_manifest(data)


def test_the_best_first_walk_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many (candidate, readings) combinations a problem offers, the walk stops
    after MAX_WALKED_FACTOR x max_candidates of them, found valid or not."""
    from mycelium.runtime import choose

    walked: list[int] = []
    real = choose.best_first

    def counted(candidates, options):
        for ranked in real(candidates, options):
            walked.append(1)
            yield ranked

    monkeypatch.setattr(choose, "best_first", counted)
    monkeypatch.setattr(choose, "MAX_EXECUTIONS_FACTOR", 10**6)  # only the walk bound
    solver = Solver.load(search=["max_candidates=3"])
    question = "A shirt costs $15. How much do 3 shirts cost?"
    monkeypatch.setattr(choose, "MAX_WALKED_FACTOR", 10**6)
    solver.solve([question])
    unbounded = len(walked)
    walked.clear()
    monkeypatch.setattr(choose, "MAX_WALKED_FACTOR", 1)
    solver.solve([question])
    assert unbounded > 3  # the walk goes past 3 combinations when let
    assert len(walked) == 3  # one walk per problem, cut at 1 x max_candidates
