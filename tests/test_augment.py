"""Number-resampled copies of train records keep every label exact."""

from __future__ import annotations

import random

from mycelium.train.augment import augment, rewrite

QUESTION = "Weng earns $12 an hour. She worked 50 minutes and half an hour, 1,200 s."
SPANS = [[11, 14], [35, 37], [50, 54], [64, 69]]


def test_rewrite_changes_digit_spans_only_and_moves_offsets() -> None:
    question, spans = rewrite(QUESTION, SPANS, random.Random(1))
    texts = [question[a:b] for a, b in spans]
    assert texts[0].startswith("$") and len(texts[0]) == 3 and texts[0][1:].isdigit()
    assert len(texts[1]) == 2 and texts[1].isdigit()
    assert texts[2] == "half"  # words are kept
    assert len(texts[3]) == 5 and texts[3][1] == "," and texts[3][0] != "0"  # format kept
    outside = [QUESTION[:11], QUESTION[14:35], QUESTION[37:50]]
    assert [question[:spans[0][0]], question[spans[0][1]:spans[1][0]],
            question[spans[1][1]:spans[2][0]]] == outside


def test_augment_copies_train_problems_consistently() -> None:
    base = {"question": QUESTION, "spans": SPANS, "split": "train"}
    records = [
        {**base, "id": 1, "group": [[0, "$12"]], "op": "DIV", "target": "Q0 C60"},
        {**base, "id": 1, "group": [[1, "50"]], "op": "MUL", "target": "R1 Q1"},
        {**base, "id": 2, "split": "dev", "group": [[0, "$12"]], "op": "DIV"},
    ]
    out = augment(records, 2, seed=0)
    assert len(out) == 4  # two copies of the two train records; dev is never copied
    first, second = out[0], out[1]
    assert first["question"] == second["question"] != QUESTION
    for row in out:
        (index, text), = row["group"]
        a, b = row["spans"][index]
        assert row["question"][a:b] == text
    assert [r["op"] for r in out] == ["DIV", "MUL", "DIV", "MUL"]
    assert out[1]["target"] == "R1 Q1"
    assert augment(records, 0, seed=0) == []


def test_problem_without_digit_spans_is_not_copied() -> None:
    record = {"question": "Half of twelve.", "spans": [[0, 4], [8, 14]], "split": "train",
              "group": [[0, "Half"]], "op": "MUL"}
    assert augment([record], 3, seed=0) == []
