"""The learned answer scorer: candidate features, the fit, and its place in the manifest."""

from __future__ import annotations

import json
import math
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_replays

from mycelium.executor import Arg, ExecutionResult, Step, execute, format_fraction
from mycelium.runtime.errors import ArtifactsError
from mycelium.runtime.spec import SolverSpec
from mycelium.runtime.verifier import (
    FEATURES,
    AnswerScorer,
    CandidateInfo,
    candidate_features,
    with_pool_features,
)
from mycelium.train.scorer import (
    ProblemCandidates,
    cross_fit,
    fit,
    pick_accuracy,
    read_cache,
    write_cache,
)

QUANTITIES = [Fraction(48), Fraction(2), Fraction(7)]
USED_PROBS = [0.9, 0.2, 0.6]


def _run(*steps: Step) -> ExecutionResult:
    result = execute(steps, QUANTITIES, connected=True)
    assert result.ok, result.error
    return result


def _features(result: ExecutionResult, score: float = -1.0) -> dict[str, float]:
    info = CandidateInfo(score, (score - 0.5, score + 0.5), -0.1, False)
    return candidate_features(info, result, QUANTITIES, USED_PROBS)


def test_candidate_features_read_the_program() -> None:
    half = _run(Step("DIV", (Arg.quantity(0), Arg.quantity(1))))
    total = _run(Step("DIV", (Arg.quantity(0), Arg.quantity(1))),
                 Step("ADD", (Arg.quantity(0), Arg.result(1))))
    one = _features(half)
    assert one["steps_1"] == 1 and one["steps_2"] == 0
    assert one["min_step_logprob"] == -1.5 and one["used_logprob"] == -0.1
    assert math.isclose(one["quantities_unread"], 1 / 3)  # 7 is never read
    assert math.isclose(one["needed_unread"], 0.6)
    assert math.isclose(one["unneeded_read"], 0.1 + 0.8)
    assert one["quantity_reuse"] == 0 and one["answer_is_quantity"] == 0
    two = _features(total)
    assert two["steps_2"] == 1 and two["quantity_reuse"] == 1  # 48 read twice
    fraction = _features(_run(Step("DIV", (Arg.quantity(2), Arg.quantity(1)))))
    assert fraction["answer_fraction"] == 1 and fraction["answer_negative"] == 0
    negative = _features(_run(Step("SUB", (Arg.quantity(1), Arg.quantity(2)))))
    assert negative["answer_negative"] == 1

    vectors = with_pool_features([one, two, _features(half, -3.0)], [half, total, half])
    column = {name: i for i, name in enumerate(FEATURES)}
    assert all(len(v) == len(FEATURES) for v in vectors)
    assert vectors[0][column["score_gap"]] == 0 and vectors[2][column["score_gap"]] == -2
    assert vectors[0][column["value_support"]] == math.log(2)
    # 24 is the two-step program's intermediate: the shorter candidate stops on the way
    assert vectors[0][column["answer_is_other_intermediate"]] == 1
    assert vectors[1][column["answer_is_other_intermediate"]] == 0
    assert vectors[0][column["steps_below_longest"]] == 1
    assert vectors[1][column["steps_below_longest"]] == 0
    assert with_pool_features([], []) == []


def test_step_parts_features_take_the_step_logprobs_apart() -> None:
    from mycelium.runtime.verifier import StepParts

    total = _run(Step("DIV", (Arg.quantity(0), Arg.quantity(1))),
                 Step("ADD", (Arg.quantity(0), Arg.result(1))))
    parts = (StepParts(-0.1, -0.5, -1.0), StepParts(-0.7, -0.3, -0.2))
    info = CandidateInfo(-1.4, (-1.6, -1.2), -0.1, False, 0.0, parts)
    features = candidate_features(info, total, QUANTITIES, USED_PROBS)
    assert features["is_step_mean"] == pytest.approx(-0.4)
    assert features["is_step_min"] == pytest.approx(-0.7)
    assert features["op_given_step_mean"] == pytest.approx(-0.4)
    assert features["args_mean"] == pytest.approx(-0.6)
    # a candidate whose steps no model read (or an older caller) has all four at 0
    bare = _features(total)
    assert [bare[name] for name in ("is_step_mean", "is_step_min", "op_given_step_mean",
                                    "args_mean")] == [0.0] * 4


def _problem(id: int, gold_first: bool) -> ProblemCandidates:
    """Three candidates; the gold one is worse scored but never stops on the way."""
    column = {name: i for i, name in enumerate(FEATURES)}
    vectors, values = [], []
    for k, (score, on_the_way) in enumerate([(-0.5, 1.0), (-1.0, 0.0), (-0.9, 1.0)]):
        vector = [0.0] * len(FEATURES)
        vector[column["score"]] = score + 0.01 * id
        vector[column["answer_is_other_intermediate"]] = on_the_way
        vectors.append(vector)
        values.append(Fraction(10 * id + k))
    gold = values[0] if gold_first else values[1]
    return ProblemCandidates(id, vectors, values, gold)


def test_fit_learns_what_the_default_ranking_misses(tmp_path: Path) -> None:
    problems = [_problem(i, gold_first=i % 5 == 0) for i in range(40)]
    default = pick_accuracy(problems, None)
    assert default == {"problems": 40, "gold_among_candidates": 40, "picked": 8}
    scorer = fit(problems, l2=1e-3)
    assert pick_accuracy(problems, scorer)["picked"] == 32
    assert scorer.weights[FEATURES.index("answer_is_other_intermediate")] < 0

    held_out = cross_fit(problems, folds=4, l2=1e-3)
    assert held_out["default"] == 8 and held_out["learned"] == 32
    assert held_out["gained"] == 32 and held_out["lost"] == 8 and held_out["mcnemar_p"] < 0.01

    cache = tmp_path / "candidates.jsonl"
    write_cache(problems, cache)
    assert [(p.values, p.gold) for p in read_cache(cache)] == [
        (p.values, p.gold) for p in problems]
    cache.write_text(cache.read_text() + "{not json\n")
    with pytest.raises(ValueError, match="line 41 is no candidate record"):
        read_cache(cache)
    older = tmp_path / "older.jsonl"  # collected by a runtime with fewer features
    write_cache([ProblemCandidates(1, [[0.0] * (len(FEATURES) - 1)], [Fraction(3)],
                                   Fraction(3))], older)
    with pytest.raises(ValueError, match=rf"line 1 .*\[{len(FEATURES) - 1}\] features "
                                         rf"where this runtime computes {len(FEATURES)}"):
        read_cache(older)
    with pytest.raises(ValueError, match="no problem has both"):
        fit([ProblemCandidates(1, [[0.0] * len(FEATURES)], [Fraction(3)], Fraction(3))])


def test_scorer_round_trips_and_bad_ones_are_refused() -> None:
    scorer = AnswerScorer(FEATURES, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES),
                          tuple(float(i) for i in range(len(FEATURES))))
    spec = SolverSpec.from_dict({**SolverSpec().to_dict(), "answer_scorer": scorer.to_dict()})
    assert spec.answer_scorer == scorer
    assert SolverSpec.from_dict(spec.to_dict()).answer_scorer == scorer
    bad = scorer.to_dict()
    bad["features"] = [*bad["features"][:-1], "word_count"]
    with pytest.raises(ArtifactsError, match="word_count"):
        SolverSpec.from_dict({**SolverSpec().to_dict(), "answer_scorer": bad})
    short = {**scorer.to_dict(), "weights": [1.0]}
    with pytest.raises(ArtifactsError, match="one mean, scale and weight"):
        SolverSpec.from_dict({**SolverSpec().to_dict(), "answer_scorer": short})


def test_a_scorer_reads_its_own_features_by_name() -> None:
    """A scorer fitted before a feature existed (or on fewer) still loads and scores the
    full vectors by feature name."""
    older = [name for name in FEATURES if name != "tail_agreement"][::-1]
    weights = [1.0 if name == "score" else 0.0 for name in older]
    stored = {"features": older, "mean": [0.0] * len(older), "scale": [1.0] * len(older),
              "weights": weights}
    scorer = SolverSpec.from_dict({**SolverSpec().to_dict(), "answer_scorer": stored}
                                  ).answer_scorer
    vectors = [[0.0] * len(FEATURES) for _ in range(2)]
    vectors[0][FEATURES.index("score")], vectors[1][FEATURES.index("score")] = -2.0, -0.5
    vectors[0][FEATURES.index("tail_agreement")] = 9.0  # not one of this scorer's features
    assert scorer.logits(vectors) == [-2.0, -0.5]
    twice = {**stored, "features": [*older[:-1], older[0]]}
    with pytest.raises(ArtifactsError, match="repeated"):
        SolverSpec.from_dict({**SolverSpec().to_dict(), "answer_scorer": twice})


def test_tail_agreement_is_the_classifiers_word_on_the_span_free_group() -> None:
    from mycelium.runtime.verifier import tail_agreement

    no_step = math.log(0.8)  # the classifier: 80 % that the empty group is no step
    assert tail_agreement(no_step, learned=False) == pytest.approx(math.log(0.8))
    assert tail_agreement(no_step, learned=True) == pytest.approx(math.log(0.2))
    assert tail_agreement(0.0, learned=True) == pytest.approx(math.log(1e-12))
    assert tail_agreement(None, learned=True) == tail_agreement(None, learned=False) == 0.0


def test_scorer_command_writes_a_scorer_the_solver_uses(tmp_path: Path, fp32_export) -> None:
    from mycelium.runtime import Solver
    from mycelium.train.cli import main as train_main

    artifacts = tmp_path / "artifacts"
    shutil.copytree(fp32_export.output, artifacts)
    cache = tmp_path / "candidates.jsonl"
    write_cache([_problem(i, gold_first=i % 5 == 0) for i in range(40)], cache)
    source = tmp_path / "gsm8k.jsonl"
    source.write_text(json.dumps({"question": "Tom has 3 apples and buys 4 more. How many?",
                                  "answer": "3+4=<<3+4=7>>7\n#### 7"}) + "\n")
    result = CliRunner().invoke(train_main, [
        "scorer", "--artifacts", str(artifacts), "--data", str(source), "--cache", str(cache),
        "--write"])
    assert result.exit_code == 0, result.output
    assert "'picked': 8" in result.output and "'picked': 32" in result.output
    solver = Solver.load(artifacts, "cpu")
    assert solver.spec.answer_scorer is not None
    assert solver.spec.answer_scorer.weights[FEATURES.index("answer_is_other_intermediate")] < 0
    results = solver.solve(["Tom has 3 apples and buys 4 more. How many?"], ids=["a"],
                           trace=True)
    assert results[0].id == "a"
    assert_replays(results[0].to_record())
    trace = results[0].trace
    assert trace is not None and len(trace.candidate_features) == len(trace.valid_values)
    # the learned scorer picked the answer: the value its logits pool most for, and its share
    if results[0].error is None:
        from mycelium.runtime.scorer import pick_index

        logits = solver.spec.answer_scorer.logits(trace.candidate_features)
        index, share = pick_index(trace.valid_values, logits)
        assert results[0].answer_exact == format_fraction(trace.valid_values[index])
        assert results[0].confidence == pytest.approx(share)
    else:
        assert trace.valid_values == []
    assert solver.spec.search.group_gap == 0  # no --search: the manifest's search is kept
    # with --search, the candidates' search is stored next to the scorer fitted on them
    result = CliRunner().invoke(train_main, [
        "scorer", "--artifacts", str(artifacts), "--data", str(source), "--cache", str(cache),
        "--search", "group_gap=1", "--write", "--folds", "0"])
    assert result.exit_code == 0, result.output
    assert Solver.load(artifacts, "cpu").spec.search.group_gap == 1


def test_store_scorer_validates_the_manifest_before_writing(tmp_path: Path,
                                                            fp32_export) -> None:
    from mycelium.runtime.manifest import MANIFEST_NAME
    from mycelium.runtime.spec import SearchSpec
    from mycelium.train.scorer_command import store_scorer

    artifacts = tmp_path / "artifacts"
    shutil.copytree(fp32_export.output, artifacts)
    before = (artifacts / MANIFEST_NAME).read_bytes()
    scorer = fit([_problem(i, gold_first=i % 5 == 0) for i in range(40)])
    with pytest.raises(ArtifactsError, match="min_op_prob"):
        store_scorer(artifacts, scorer, SearchSpec(min_op_prob=1.5))  # would not load
    assert (artifacts / MANIFEST_NAME).read_bytes() == before
    store_scorer(artifacts, scorer, SearchSpec(group_gap=1))
    stored = json.loads((artifacts / MANIFEST_NAME).read_text())["mycelium"]
    spec = SolverSpec.from_dict(stored)
    assert spec.answer_scorer == AnswerScorer.from_dict(scorer.to_dict())
    assert spec.search == SearchSpec(group_gap=1)


def _add_or_multiply(solver):  # noqa: ANN001, ANN202 - a test helper
    """Spans of QUANTITIES, the solver's used sets, and one group read as ADD (better
    scored, 57) or MUL (672)."""
    from mycelium.runtime import Span
    from mycelium.runtime.readings import Variant
    from mycelium.runtime.search import used_sets

    spans = [Span(i, i + 1, str(v), v, 0.9) for i, v in enumerate(QUANTITIES)]
    sets = used_sets([0.9] * 3, solver.spec.search)
    group = tuple(Arg.quantity(i) for i in range(3))
    readings = {(0, 1, 2): [Variant("ADD", group, -0.1, "Q0 Q1 Q2"),
                            Variant("MUL", group, -0.5, "Q0 Q1 Q2")]}
    return spans, sets, readings


def test_solver_ranks_by_the_learned_scorer(fp32_export) -> None:
    from dataclasses import replace

    from mycelium.runtime import Solver

    solver = Solver.load(fp32_export.output, "cpu")
    spans, sets, readings = _add_or_multiply(solver)
    assert solver.choose("p", spans, sets, readings).answer == 57  # the better-scored
    magnitude = FEATURES.index("answer_log_magnitude")
    for sign, answer in ((1.0, 672), (-1.0, 57)):
        weights = [0.0] * len(FEATURES)
        weights[magnitude] = 50.0 * sign
        scorer = AnswerScorer(FEATURES, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES),
                              tuple(weights))
        solver.spec = replace(solver.spec, answer_scorer=scorer)
        result = solver.choose("p", spans, sets, readings, trace=True)
        assert result.answer == answer and result.confidence > 0.99
        assert len(result.trace.candidate_features) == len(result.trace.valid_values)
        programs = result.trace.candidate_programs
        assert [program[-1]["result"] for program in programs] == [
            str(value) for value in result.trace.valid_values]
    # the same preference from a hidden unit alone (a ReLU of the magnitude, weighed by out)
    from mycelium.runtime.verifier import HiddenLayer

    unit = tuple(1.0 if i == magnitude else 0.0 for i in range(len(FEATURES)))
    for out, answer in ((50.0, 672), (-50.0, 57)):
        scorer = AnswerScorer(FEATURES, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES),
                              (0.0,) * len(FEATURES), HiddenLayer((unit,), (0.0,), (out,)))
        solver.spec = replace(solver.spec, answer_scorer=scorer)
        assert solver.choose("p", spans, sets, readings).answer == answer


def test_scorer_command_without_signal_is_one_clear_line(tmp_path: Path, fp32_export) -> None:
    from mycelium.train.cli import main as train_main

    cache = tmp_path / "candidates.jsonl"
    write_cache([ProblemCandidates(1, [[0.0] * len(FEATURES)], [Fraction(3)], Fraction(4))],
                cache)
    source = tmp_path / "gsm8k.jsonl"
    source.write_text("")
    result = CliRunner().invoke(train_main, [
        "scorer", "--artifacts", str(fp32_export.output), "--data", str(source),
        "--cache", str(cache), "--folds", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: no problem has both a gold-valued and another valid candidate")


def test_candidate_programs_are_written_as_solution_text(tmp_path: Path) -> None:
    from mycelium.runtime.render import program_record
    from mycelium.train.program_text import render_program

    result = _run(Step("DIV", (Arg.quantity(0), Arg.quantity(1))),
                  Step("SUB", (Arg.quantity(2), Arg.result(1))),
                  Step("AVG", ()))
    text = render_program(program_record(result, []))
    assert text == "48/2 = 24\n7-24 = (-17)\n(24+(-17))/2 = (7/2)\n#### 7/2"
    with pytest.raises(ValueError, match="empty program"):
        render_program([])
    problem = ProblemCandidates(3, [[0.0] * len(FEATURES)], [Fraction(7, 2)], Fraction(4), [text])
    write_cache([problem], tmp_path / "cache.jsonl")
    assert read_cache(tmp_path / "cache.jsonl")[0].programs == [text]


def _xor_problems(count: int) -> list[ProblemCandidates]:
    """The gold candidate is the one whose two marked features differ: no linear logit
    ranks it first in both halves ((1,0) beats (1,1) and (0,0) only with w_a > 0 > w_b,
    (0,1) only with w_b > 0 > w_a)."""
    a, b = FEATURES.index("constants"), FEATURES.index("quantity_reuse")
    problems = []
    for i in range(count):
        odd = (1.0, 0.0) if i % 2 else (0.0, 1.0)
        vectors = []
        for x, y in ((1.0, 1.0), (0.0, 0.0), odd):
            vector = [0.0] * len(FEATURES)
            vector[a], vector[b] = x, y
            vectors.append(vector)
        problems.append(ProblemCandidates(i, vectors, [Fraction(1), Fraction(2), Fraction(3)],
                                          Fraction(3)))
    return problems


def test_hidden_units_learn_what_no_linear_scorer_can() -> None:
    problems = _xor_problems(40)
    linear = fit(problems, l2=1e-3)
    assert linear.hidden is None
    assert pick_accuracy(problems, linear)["picked"] <= 20
    deep = fit(problems, l2=1e-3, hidden=8)
    assert pick_accuracy(problems, deep)["picked"] == 40
    assert cross_fit(problems, folds=4, l2=1e-3, hidden=8)["learned"] == 40

    spec = SolverSpec.from_dict({**SolverSpec().to_dict(), "answer_scorer": deep.to_dict()})
    stored = spec.answer_scorer
    assert stored is not None and stored.hidden is not None and len(stored.hidden.out) == 8
    vectors = [vector for p in problems[:2] for vector in p.vectors]
    assert stored.logits(vectors) == pytest.approx(deep.logits(vectors), abs=1e-4)
    pair = fit(problems, l2=1e-3, hidden=8, members=2)
    second = fit(problems, l2=1e-3, hidden=8, seed=1)
    assert len(pair.hidden.out) == 16
    assert pair.logits(vectors) == pytest.approx(
        [(x + y) / 2 for x, y in zip(deep.logits(vectors), second.logits(vectors), strict=True)],
        abs=1e-9)
    ragged = deep.to_dict()
    ragged["hidden"] = {**ragged["hidden"], "out": ragged["hidden"]["out"][:-1]}
    with pytest.raises(ArtifactsError, match="hidden"):
        SolverSpec.from_dict({**SolverSpec().to_dict(), "answer_scorer": ragged})


def test_solver_reports_the_calibrated_confidence(fp32_export) -> None:
    from dataclasses import replace

    from mycelium.runtime import Solver
    from mycelium.runtime.calibration import ConfidenceCalibration

    solver = Solver.load(fp32_export.output, "cpu")
    spans, sets, readings = _add_or_multiply(solver)
    weights = [0.0] * len(FEATURES)
    weights[FEATURES.index("answer_log_magnitude")] = 50.0
    scorer = AnswerScorer(FEATURES, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES),
                          tuple(weights))
    solver.spec = replace(solver.spec, answer_scorer=scorer)
    raw = solver.choose("p", spans, sets, readings)
    assert raw.answer == 672 and raw.confidence > 0.99  # the pool's share
    # two valid candidates, two values: P(right) = sigmoid(-1 + 0.5 log 2)
    calibration = ConfidenceCalibration(("log_values",), (0.5,), -1.0)
    solver.spec = replace(solver.spec, confidence_calibration=calibration)
    result = solver.choose("p", spans, sets, readings)
    assert result.answer == 672
    assert result.confidence == pytest.approx(1 / (1 + math.exp(1.0 - 0.5 * math.log(2))))


def test_scorer_command_calibrates_and_drops_a_stale_calibration(
        tmp_path: Path, fp32_export) -> None:
    from mycelium.runtime import Solver
    from mycelium.train.cli import main as train_main

    artifacts = tmp_path / "artifacts"
    shutil.copytree(fp32_export.output, artifacts)
    cache = tmp_path / "candidates.jsonl"
    write_cache([_problem(i, gold_first=i % 5 == 0) for i in range(40)], cache)
    source = tmp_path / "gsm8k.jsonl"
    source.write_text("")
    common = ["scorer", "--artifacts", str(artifacts), "--data", str(source),
              "--cache", str(cache), "--write"]
    refused = CliRunner().invoke(train_main, [*common, "--calibrate", "--folds", "0"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.output.strip().splitlines()[-1] == (
        "Error: --calibrate fits on held-out picks: it needs --folds 2 or more")
    result = CliRunner().invoke(train_main, [*common, "--calibrate", "--folds", "4"])
    assert result.exit_code == 0, result.output
    assert "confidence of the held-out picks" in result.output
    spec = Solver.load(artifacts, "cpu").spec
    assert spec.confidence_calibration is not None and spec.answer_scorer is not None
    result = CliRunner().invoke(train_main, [*common, "--folds", "0"])  # a new scorer
    assert result.exit_code == 0, result.output
    assert Solver.load(artifacts, "cpu").spec.confidence_calibration is None
