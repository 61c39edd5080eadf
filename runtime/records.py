"""Read JSONL problems robustly and write result records atomically, line by line.

Every non-empty input line yields exactly one :class:`InputRecord`: either a
question to solve or the reason it cannot be solved. Empty (or whitespace-only)
lines are skipped and yield no record. Nothing here raises on bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

MAX_QUESTION_CHARS = 8000
MAX_LINE_BYTES = 1 << 20  # longer lines are answered with an error record, not read whole


@dataclass(frozen=True)
class InputRecord:
    """One input line: its number, id, and either a question or an error."""

    line: int
    id: Any
    question: str | None = None
    error: str | None = None


def _valid_id(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def parse_line(raw: bytes, line: int) -> InputRecord | None:
    """Decode one line (without its newline); None for an empty line."""
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputRecord(line, line, error=f"line {line}: invalid UTF-8 at byte {exc.start}")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        return InputRecord(line, line, error=f"line {line}: invalid JSON ({reason})")
    return record_from_object(data, line, f"line {line}")


def record_from_object(data: Any, line: int, where: str) -> InputRecord:
    """Validate one decoded problem object; ``where`` names it in errors ("line 3")."""
    if not isinstance(data, dict):
        return InputRecord(
            line, line, error=f"{where}: expected a JSON object, got {type(data).__name__}"
        )
    record_id = data.get("id", line)
    if not _valid_id(record_id):
        return InputRecord(line, line, error=f"{where}: id must be a JSON scalar")
    if "question" not in data:
        return InputRecord(line, record_id, error=f"{where}: no 'question' field")
    question = data["question"]
    if not isinstance(question, str):
        return InputRecord(
            line, record_id, error=f"{where}: 'question' must be a string, "
            f"got {type(question).__name__}"
        )
    if not question.strip():
        return InputRecord(line, record_id, error=f"{where}: 'question' is empty")
    if len(question) > MAX_QUESTION_CHARS:
        return InputRecord(
            line, record_id,
            error=f"{where}: 'question' has {len(question)} characters "
            f"(limit {MAX_QUESTION_CHARS})",
        )
    return InputRecord(line, record_id, question=question)


def read_records(stream: IO[bytes]) -> Iterator[InputRecord]:
    """Stream records from a binary JSONL stream, one per non-empty line."""
    line = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:  # skip the rest of the over-long line without keeping it
                rest = stream.readline(MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            yield InputRecord(line, line, error=f"line {line}: longer than {MAX_LINE_BYTES} bytes")
            continue
        record = parse_line(raw.rstrip(b"\r\n"), line)
        if record is not None:
            yield record


def id_key(value: Any) -> str:
    """A canonical key of a record id (so 1 and "1" stay distinct)."""
    return json.dumps(value, sort_keys=True)


def written_ids(path: str) -> set[str]:
    """Ids already in a (possibly torn) output file; a torn last line is cut off.

    Streams the file, so memory grows with the number of ids, not the file size.
    """
    done: set[str] = set()
    complete = 0  # bytes up to the end of the last complete line
    with open(path, "r+b") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            complete += len(raw)
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, ValueError):
                continue
            if isinstance(record, dict) and "id" in record:
                done.add(id_key(record["id"]))
        handle.seek(0, 2)
        if handle.tell() > complete:
            handle.truncate(complete)
    return done


def dump_record(record: dict[str, Any]) -> str:
    """One JSON line (no NaN/Infinity), newline included."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
