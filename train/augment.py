"""Number-resampled copies of the train records (data augmentation, optional).

A copy of a problem rewrites the digits of each quantity span written with
digits (``48``, ``$12``, ``1,200``, ``3.50``, ``20%``) at random, keeping its
format; everything else (words, the span's position in the span list, the group,
the operation, the symbolic arguments ``Q0 R1 C2``) is unchanged, so the labels
stay exact. The models then see each wording with several numbers and must read
the words around a quantity rather than the number itself. Spans written in
words (``half``, ``a dozen``) are kept as they are. Only train records are
copied; dev never changes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

Record = dict[str, Any]


NUMBER_MARKS = frozenset("$,.%")  # characters a digit span may hold besides its digits


def _is_digit_span(text: str) -> bool:
    """Written with digits only, apart from currency, separators and percent (``$1,200.50``)."""
    return any(c.isdigit() for c in text) and all(
        (c.isascii() and c.isdigit()) or c in NUMBER_MARKS for c in text
    )


def _resample(text: str, rng: random.Random) -> str:
    """Every digit replaced by a random one, the format (and so the length) kept; a run of
    several digits keeps a non-zero first digit, a single digit becomes 2-9."""
    out = []
    for i, char in enumerate(text):
        if not char.isdigit():
            out.append(char)
            continue
        leading = i == 0 or (not text[i - 1].isdigit() and text[i - 1] not in ",.")
        alone = i + 1 == len(text) or not text[i + 1].isdigit()
        low = (2 if alone else 1) if leading else 0
        out.append(str(rng.randint(low, 9)))
    return "".join(out)


def rewrite(question: str, spans: Sequence[Sequence[int]],
            rng: random.Random) -> tuple[str, list[list[int]]]:
    """The question with its digit spans resampled, and the spans (their offsets are
    unchanged: a resampled span keeps its length)."""
    chars = list(question)
    for start, end in spans:
        text = question[start:end]
        if _is_digit_span(text):
            chars[start:end] = _resample(text, rng)
    return "".join(chars), [[start, end] for start, end in spans]


def augment(records: list[Record], copies: int, seed: int) -> list[Record]:
    """``copies`` rewritten copies of each train problem's records (all of a problem's
    records share one rewrite). Records need ``question`` and ``spans``; a ``group``'s
    span texts follow the rewrite."""
    if copies <= 0:
        return []
    rng = random.Random(seed)
    by_question: dict[str, list[Record]] = {}
    for record in records:
        if record.get("split") == "train" and record.get("spans") is not None:
            by_question.setdefault(record["question"], []).append(record)
    out: list[Record] = []
    for question, rows in by_question.items():
        spans = rows[0]["spans"]
        for copy in range(copies):
            new_question, new_spans = rewrite(question, spans, rng)
            if new_question == question:
                break  # no digit span to resample: a copy would only repeat the problem
            texts = [new_question[a:b] for a, b in new_spans]
            for row in rows:
                new = {**row, "question": new_question, "spans": new_spans,
                       "id": f"{row.get('id')}~{copy + 1}"}
                if "group" in row:
                    new["group"] = [[index, texts[index]] for index, _ in row["group"]]
                out.append(new)
    return out
