"""Ray Data engine in Ray's local mode (2 CPUs here) against the local engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")

from mycelium.runtime.cli import main  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "problems.jsonl"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4,  # logical CPUs: two actors and the reader
             include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", configure_logging=False)
    yield
    ray.shutdown()


def _mixed(folder: Path) -> Path:
    """The examples, an empty line, bad lines and a problem without an id."""
    path = folder / "mixed.jsonl"
    path.write_text(EXAMPLES.read_text(encoding="utf-8") + "\n"
                    + '{"id": "bad", "question": 3}\nnot json\n'
                    + '{"question": "Tom has 3 apples and buys 4 more. How many?"}\n',
                    encoding="utf-8")
    return path


def test_solve_engine_ray_writes_what_the_local_engine_writes(local_ray, tmp_path: Path) -> None:
    source = _mixed(tmp_path)
    runner = CliRunner()
    local = runner.invoke(main, ["solve", str(source), "-o", str(tmp_path / "local.jsonl"),
                                 "--quiet", "--provider", "cpu"])
    assert local.exit_code == 0, local.output
    distributed = runner.invoke(main, ["solve", str(source), "-o", str(tmp_path / "ray.jsonl"),
                                       "--engine", "ray", "--workers", "2", "--batch-size",
                                       "16", "--quiet", "--provider", "cpu"])
    assert distributed.exit_code == 0, distributed.output
    # all eight problems fit one batch in both engines, so even int8 effects agree
    expected = (tmp_path / "local.jsonl").read_text(encoding="utf-8")
    assert (tmp_path / "ray.jsonl").read_text(encoding="utf-8") == expected
    records = [json.loads(line) for line in expected.splitlines()]
    example_ids = [json.loads(line)["id"] for line in EXAMPLES.read_text().splitlines()]
    assert [r["id"] for r in records] == [*example_ids, "bad", 8, 9]
    assert records[6]["error"] == "line 8: invalid JSON (Expecting value)"


def test_engine_ray_refuses_stdin_in_one_line() -> None:
    result = CliRunner().invoke(main, ["solve", "-", "--engine", "ray"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: --engine ray reads a file or URL: no stdin, "
                                     "--text or --resume")


def test_solve_dataset_carries_every_column(local_ray) -> None:
    from mycelium.runtime.ray import RESULT_COLUMNS, solve_dataset

    rows = [json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    rows = [{**row, "source": f"s{n}"} for n, row in enumerate(rows)]
    rows.append({"id": "no-text", "question": None, "source": "s9"})
    solved = solve_dataset(ray.data.from_items(rows), batch_size=8, concurrency=1)
    out = sorted(solved.take_all(), key=lambda r: r["source"])
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    assert all(set(RESULT_COLUMNS) <= set(r) for r in out)
    assert [r["source"] for r in out] == [f"s{n}" for n in range(5)] + ["s9"]
    assert out[0]["answer_exact"] == "72" and json.loads(out[0]["program"])[0]["op"] == "DIV"
    assert out[-1]["answer"] is None
    assert out[-1]["error"] == "row id 'no-text': 'question' must be a string, got NoneType"
