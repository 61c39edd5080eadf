"""No input crashes a run or loses a record; a killed run resumes without repeats."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from conftest import assert_replays
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.runtime.cli import main
from mycelium.runtime.records import read_records

HOSTILE_LINES = [
    b"\xff\xfe\xfa not utf-8",
    b"{broken",
    b"42",
    b'"just a string"',
    b'{"id": 1}',
    b'{"question": ""}',
    b'{"question": null}',
    b'{"question": ["list"]}',
    b'{"question": "1e400 apples and 1e400 more?"}',
    b'{"question": "' + b"9" * 400 + b' apples and 3 more?"}',
    b'{"question": "divide 5 by 0 and 0 by 0"}',
    '{"question": "٣ apples and ४ pears, how many?"}'.encode(),
    b'{"question": "tabs\\t and \\u0000 control \\u001b chars 3 4"}',
    b'{"question": "' + b"x" * (10 * 1024 * 1024) + b'"}',
    b'{"question": "crlf line with 2 and 3"}\r',
    b'{"question": "' + b"word 7 " * 1200 + b'"}',
    b'{"question": "ok 1 and 2", "id": {"nested": 1}}',
]


def test_every_hostile_line_gets_one_record(fp32_export, tmp_path: Path) -> None:
    source = tmp_path / "hostile.jsonl"
    source.write_bytes(b"\n".join(HOSTILE_LINES) + b"\n\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main, ["solve", str(source), "-o", str(out), "--artifacts", str(fp32_export.output)]
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(HOSTILE_LINES)
    assert [r["id"] for r in records][:3] == [1, 2, 3]
    for record in records:
        assert set(record) == {"id", "answer", "answer_exact", "program", "confidence", "error"}
        assert_replays(record)
    assert "errors" in result.output


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=80).filter(lambda b: b"\n" not in b), max_size=12))
def test_reader_yields_one_record_per_non_empty_line(lines: list[bytes]) -> None:
    data = b"\n".join(lines) + b"\n"
    records = list(read_records(io.BytesIO(data)))
    expected = [i + 1 for i, line in enumerate(lines) if line.strip()]
    assert [r.line for r in records] == expected
    for record in records:
        assert (record.question is None) != (record.error is None)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["question", "id", "answer", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                 st.text(max_size=30), st.lists(st.integers(), max_size=3)),
                       max_size=4))
def test_reader_on_random_json_objects(obj: dict) -> None:
    line = json.dumps(obj).encode()
    (record,) = list(read_records(io.BytesIO(line + b"\n")))
    if isinstance(obj.get("question"), str) and obj["question"].strip():
        assert record.question == obj["question"] or record.error
    else:
        assert record.error


def test_killed_run_resumes_without_loss_or_repeat(fp32_export, tmp_path: Path) -> None:
    count = 60
    source = tmp_path / "in.jsonl"
    source.write_text("".join(
        json.dumps({"id": f"p{i}", "question": f"Tom has {i} apples and buys {i + 2} more."})
        + "\n" for i in range(count)
    ))
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "mycelium.runtime.cli", "solve", str(source), "-o", str(out),
               "--artifacts", str(fp32_export.output), "--batch-size", "1", "--quiet"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    partial = out.read_text()
    assert partial.endswith("\n")  # no torn line
    written = len(partial.splitlines())
    assert 5 <= written < count, "the run should have been stopped part-way"
    resumed = subprocess.run([*command, "--resume"], capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"p{i}" for i in range(count))
    assert len(ids) == len(set(ids))


def test_resume_cuts_a_torn_tail(fp32_export, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(
        json.dumps({"id": i, "question": f"Add {i} and 3."}) + "\n" for i in range(4)
    ))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": 0, "answer": None, "error": "x"}) + "\n" + '{"id": 1, "ans')
    result = CliRunner().invoke(main, ["solve", str(source), "-o", str(out), "--resume",
                                       "--artifacts", str(fp32_export.output), "--quiet"])
    assert result.exit_code == 0, result.output
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [0, 1, 2, 3]
    assert os.path.getsize(out) > 0
