"""data → train → export → solve, end to end on micro models (never a real training run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from conftest import assert_replays  # noqa: E402

from mycelium.executor import format_fraction  # noqa: E402
from mycelium.export import export_checkpoint  # noqa: E402
from mycelium.runtime import Solver  # noqa: E402
from mycelium.train.cli import main as train_main  # noqa: E402

PROBLEMS = [
    ("Tom has 12 apples and buys 7 more. How many apples does he have?",
     "Tom has 12+7=<<12+7=19>>19 apples.\n#### 19"),
    ("Ann had 30 stickers and gave away 8. How many are left?",
     "She has 30-8=<<30-8=22>>22 left.\n#### 22"),
    ("A box holds 6 pens. How many pens are in 4 boxes?",
     "There are 6*4=<<6*4=24>>24 pens.\n#### 24"),
    ("Sam splits 40 candies among 5 friends. How many does each get?",
     "Each gets 40/5=<<40/5=8>>8 candies.\n#### 8"),
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
     "in May. How many clips did Natalia sell altogether in April and May?",
     "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
     "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
     "babysitting. How much did she earn?",
     "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
     "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"),
] * 2  # 12 lines: line 0 and 10 fall in dev (i % 10 == 0), the rest in train


def test_data_train_export_solve(tmp_path: Path) -> None:
    source = tmp_path / "gsm8k.jsonl"
    source.write_text("".join(
        json.dumps({"question": q, "answer": a}) + "\n" for q, a in PROBLEMS
    ))
    data, checkpoint = tmp_path / "data", tmp_path / "ckpt"
    runner = CliRunner()
    result = runner.invoke(train_main, ["data", "--data", str(source), "--out", str(data),
                                        "--vocab-size", "400"])
    assert result.exit_code == 0, result.output
    coverage = json.loads((data / "coverage.json").read_text())
    assert coverage["splits"]["train"]["reachable"] >= 8
    result = runner.invoke(train_main, ["fit", "--data", str(data), "--out", str(checkpoint),
                                        "--size", "tiny", "--epochs", "2", "--minutes", "1"])
    assert result.exit_code == 0, result.output
    for name in ("segmenter", "classifier", "extractor"):
        assert (checkpoint / name / "model.safetensors").is_file()
    report = export_checkpoint(checkpoint, tmp_path / "artifacts", log=lambda _t: None)
    assert all(row.status == "ok" for row in report.parity)
    solver = Solver.load(report.output, "cpu")
    results = solver.solve([q for q, _ in PROBLEMS[:6]], ids=list(range(6)))
    assert [r.id for r in results] == list(range(6))
    assert sum(solver.stats.tokens.values()) > 0
    for r in results:
        assert_replays(r.to_record())
        if r.error is None:  # the quantities the program read are the problem's spans
            for step in r.program:
                for arg in step["args"]:
                    if arg["source"] == "quantity":
                        span = r.spans[arg["index"]]
                        assert [span.start, span.end] == arg["span"]
                        assert arg["value"] == format_fraction(span.value)
