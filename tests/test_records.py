"""The JSONL reader answers every non-empty line, whatever its bytes."""

import io
import json

import pytest

from mycelium.runtime.records import (
    MAX_LINE_BYTES,
    MAX_QUESTION_CHARS,
    dump_record,
    read_records,
    written_ids,
)


def records(data: bytes):
    return list(read_records(io.BytesIO(data)))


def test_good_lines_keep_ids_and_default_to_line_numbers() -> None:
    out = records(b'{"id": "a", "question": "q1"}\n{"question": "q2", "answer": "#### 3"}\n')
    assert [(r.id, r.question, r.error) for r in out] == [("a", "q1", None), (2, "q2", None)]


def test_empty_lines_are_skipped_and_crlf_accepted() -> None:
    out = records(b'\n   \r\n{"question": "q"}\r\n\n')
    assert len(out) == 1 and out[0].question == "q" and out[0].line == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"\xff\xfe{}", "invalid UTF-8"),
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"id": 1}', "no 'question'"),
        (b'{"question": ""}', "is empty"),
        (b'{"question": "   "}', "is empty"),
        (b'{"question": 5}', "must be a string"),
        (b'{"question": "q", "id": [1]}', "id must be a JSON scalar"),
        (b'{"question": "q", "id": 1e400}', "id must be a JSON scalar"),
        (b'{"question": "q", "id": ' + b"9" * 5000 + b"}", "invalid JSON"),
        (json.dumps({"question": "x" * (MAX_QUESTION_CHARS + 1)}).encode(), "limit"),
    ],
)
def test_bad_lines_get_error_records(line: bytes, message: str) -> None:
    (record,) = records(line + b"\n")
    assert record.question is None and message in record.error


def test_over_long_line_does_not_swallow_the_next() -> None:
    data = b'{"question": "' + b"a" * (MAX_LINE_BYTES + 10) + b'"}\n{"question": "ok"}\n'
    first, second = records(data)
    assert "longer than" in first.error and second.question == "ok"


def test_written_ids_cuts_a_torn_line(tmp_path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(dump_record({"id": 1}) + dump_record({"id": "b"}) + '{"id": 3, "ans')
    assert written_ids(str(path)) == {"1", '"b"'}
    assert path.read_text().endswith("\n")


def test_dump_record_refuses_nan() -> None:
    with pytest.raises(ValueError):
        dump_record({"x": float("nan")})
