"""Supervision derived from GSM8K-style annotations (problems written here, never the real file)."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

from mycelium.executor import execute
from mycelium.runtime.spec import SEGMENTER_LABELS, SearchSpec
from mycelium.train.align import CONSTANTS, canonical_order, derive, to_executor
from mycelium.train.annotations import (
    AnnotationError,
    Leaf,
    Ref,
    parse_solution,
    plain_calculations,
)
from mycelium.train.cli import main
from mycelium.train.scan import scan_quantities
from mycelium.train.tokenizer import ARG_TOKENS, bio_labels, train_tokenizer

NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?",
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
)
PENS = (
    "Tom has 3 boxes with 12 pens each. He gives away 5 pens. How many pens are left?",
    "He has 3*12=<<3*12=36>>36 pens. He keeps 36-5=<<36-5=31>>31 pens.\n#### 31",
)
WEEK = (
    "A car travels 50 miles per hour for 3 hours a day. How far does it go in a week?",
    "Per day 50*3=<<50*3=150>>150 miles. In a week 150*7=<<150*7=1050>>1050 miles.\n#### 1050",
)
SWAPPED = (  # computed in the opposite order of the text: reordered into chunks
    "Ann buys 3 packs of 4 pens. Bob buys 5 packs of 2 pencils. How many items in total?",
    "Bob: 5*2=<<5*2=10>>10. Ann: 3*4=<<3*4=12>>12. Total 12+10=<<12+10=22>>22.\n#### 22",
)
TEMPLATE = (
    "Ann has 3 bags of 4 apples, 7 bags of 5 pears and 6 boxes of 2 plums. "
    "How many fruits does she have?",
    "3*4=<<3*4=12>>12 apples, 7*5=<<7*5=35>>35 pears, 6*2=<<6*2=12>>12 plums. "
    "12+35=<<12+35=47>>47 and 47+12=<<47+12=59>>59 fruits.\n#### 59",
)
CONFLICT = (  # the first span is needed only after a step over later spans
    "Ann has 15 pens. Bob has 3 boxes of 4 pens. How many pens do they have together?",
    "Bob has 3*4=<<3*4=12>>12 pens. Together 15+12=<<15+12=27>>27 pens.\n#### 27",
)
SPAN_CONSTANT = (  # the same, but 5 is also a constant: "ADD C5 R1" only with span constants
    "Ann has 5 pens. Bob has 3 boxes of 4 pens. How many pens do they have together?",
    "Bob has 3*4=<<3*4=12>>12 pens. Together 5+12=<<5+12=17>>17 pens.\n#### 17",
)
DISTRACTOR = (  # "2 dogs" is a quantity the solution does not use: chunks skip it
    "Tom has 3 boxes and 2 dogs. Each box holds 12 pens. He gives away 5 pens. "
    "How many pens are left?",
    "He has 3*12=<<3*12=36>>36 pens. He keeps 36-5=<<36-5=31>>31 pens.\n#### 31",
)


def _program(derivation) -> list[tuple[str, str, list[int]]]:
    return [(s.op, " ".join(s.args), s.group) for s in derivation.program]


# ------------------------------------------------------------------ annotations
def test_flattening_and_parentheses() -> None:
    steps = parse_solution("<<2+3+4=9>> <<(2+3)*4=20>> <<10-2-3=5>> <<10-(2-3)=11>>")
    assert [s.op for s in steps] == ["ADD", "ADD", "MUL", "SUB", "SUB", "SUB"]
    assert [op.value for op in steps[0].operands] == [2, 3, 4]  # n-ary ADD
    assert steps[2].operands == [Ref(1), Leaf(Fraction(4), "4")]  # (2+3) is a step
    assert len(steps[3].operands) == 3  # 10-2-3 flattened left-assoc
    assert steps[5].operands[1] == Ref(4)  # 10-(2-3): not flattened
    assert steps[5].value == 11 and steps[5].written == 11


def test_normalisation_and_exact_values() -> None:
    steps = parse_solution("<<$1,200*.5=600>> <<10/4=2.5>> <<50%*2=100>>")
    assert [s.value for s in steps] == [600, Fraction(5, 2), 100]
    assert steps[0].operands[1] == Leaf(Fraction(1, 2), ".5")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<<2**3=8>>", "unsupported_operator:Pow"),
        ("<<560//10=56>>", "unsupported_operator:FloorDiv"),
        ("<<x+1=2>>", "unsupported_node:Name"),
        ("<<3+=4>>", "syntax_error"),
        ("<<4/0=0>>", "division_by_zero"),
    ],
)
def test_unsupported_annotations(body: str, reason: str) -> None:
    with pytest.raises(AnnotationError) as info:
        parse_solution(body)
    assert info.value.reason == reason


def test_fraction_literal_is_one_leaf_when_the_text_has_it() -> None:
    steps = parse_solution("<<3/4*40=30>>", fraction_literal=lambda v: v == Fraction(3, 4))
    assert len(steps) == 1 and steps[0].operands[0] == Leaf(Fraction(3, 4), "3/4")
    assert len(parse_solution("<<3/4*40=30>>")) == 2  # otherwise a division step


def test_plain_calculations() -> None:
    text = "She pays 5*7 = $35. Then 12 - 4 = <<8=8>>8 and 48/2 = <<48/2=24>>24 left."
    assert [body for _, body in plain_calculations(text)] == ["5*7=35", "12 - 4=8"]


# ------------------------------------------------------------------ text quantities
def test_scan_quantities() -> None:
    text = ("A 5-year-old paid $1,200 for twenty-five apples (3.5 kg), a dozen eggs, half a "
            "pie, two and three cats; she came 2nd.")
    found = [(q.text, q.value) for q in scan_quantities(text)]
    assert found == [
        ("5", 5), ("$1,200", 1200), ("twenty-five", 25), ("3.5", Fraction(7, 2)),
        ("a dozen", 12), ("half", Fraction(1, 2)), ("two", 2), ("three", 3),
    ]
    for q in scan_quantities(text):
        assert text[q.start : q.end] == q.text


# ------------------------------------------------------------------ alignment and order
def test_natalia_tail_reuses_a_span() -> None:
    d = derive(*NATALIA)
    assert d.reachable and d.reason is None and d.tail == "LEARNED"
    assert [s.text for s in d.spans] == ["48", "half"]  # all text quantities
    assert d.used == [True, False]
    assert _program(d) == [("DIV", "Q0 C2", [0]), ("ADD", "Q0 R1", [])]


def test_unused_spans_keep_global_indices_and_are_skipped_by_chunks() -> None:
    d = derive(*DISTRACTOR)
    assert d.reachable and [s.text for s in d.spans] == ["3", "2", "12", "5"]
    assert d.used == [True, False, True, True]
    assert _program(d) == [("MUL", "Q0 Q2", [0, 2]), ("SUB", "R1 Q3", [3])]


def test_sources_q_r_c() -> None:
    pens = derive(*PENS)
    assert _program(pens) == [("MUL", "Q0 Q1", [0, 1]), ("SUB", "R1 Q2", [2])]
    week = derive(*WEEK)
    assert _program(week) == [("MUL", "Q0 Q1", [0, 1]), ("MUL", "R1 C7", [])]
    assert week.answer == 1050


def test_reordering_to_chunks() -> None:
    d = derive(*SWAPPED)
    assert d.reachable
    assert _program(d) == [("MUL", "Q0 Q1", [0, 1]), ("MUL", "Q2 Q3", [2, 3]),
                           ("ADD", "R1 R2", [])]  # "12+10": canonical order, see below


def test_commutative_arguments_are_written_in_one_order() -> None:
    """"5*3" and "3*5" are one step; targets carry no order noise for ADD and MUL, while
    SUB and DIV keep the annotation's order."""
    question = "Ann has 3 bags with 5 apples each. She eats 2. How many are left?"
    forward = derive(question, "3*5=<<3*5=15>>15. 15-2=<<15-2=13>>13.\n#### 13")
    backward = derive(question, "5*3=<<5*3=15>>15. 15-2=<<15-2=13>>13.\n#### 13")
    assert _program(forward) == _program(backward) == [
        ("MUL", "Q0 Q1", [0, 1]), ("SUB", "R1 Q2", [2])]
    added = derive(question, "3*5=<<3*5=15>>15. 2+15=<<2+15=17>>17.\n#### 17")
    assert _program(added)[-1] == ("ADD", "Q2 R1", [2])  # quantities, results, constants
    assert canonical_order("SUB", ["R1", "Q2"]) == ["R1", "Q2"]
    assert canonical_order("MUL", ["C7", "R1", "Q3", "Q0"]) == ["Q0", "Q3", "R1", "C7"]


def test_several_span_free_steps_become_a_template() -> None:
    d = derive(*TEMPLATE)
    assert d.reachable and d.tail == "ACC_ADD"
    assert [s.group for s in d.program] == [[0, 1], [2, 3], [4, 5], []]
    assert d.program[-1].op == "ACC_ADD" and d.program[-1].args == []


def test_derived_programs_execute_to_the_answer() -> None:
    for problem in (NATALIA, PENS, WEEK, SWAPPED, TEMPLATE, DISTRACTOR):
        d = derive(*problem)
        program = to_executor(d.program)
        assert program is not None
        result = execute(program, [s.value for s in d.spans], constants=CONSTANTS.keys())
        assert result.ok and result.value == d.answer


NONCONTIGUOUS = (  # the first step multiplies the first and the third quantity
    "Tom has 15 pens, 3 cups and 4 boxes.",
    "15*4=<<15*4=60>>60. 60+3=<<60+3=63>>63\n#### 63",
)


@pytest.fixture
def text_order_only(monkeypatch):
    """The search as it was before chunk orders were permuted (permute_chunks=1)."""
    from mycelium.runtime.gold import align

    monkeypatch.setattr(align, "SEARCH", replace(align.SEARCH, permute_chunks=1))


def test_chunks_may_run_out_of_text_order() -> None:
    d = derive(*CONFLICT)  # 15 + 3*4: the step over the later spans runs first
    assert d.reachable
    assert _program(d) == [("MUL", "Q1 Q2", [1, 2]), ("ADD", "Q0 R1", [0])]
    program = to_executor(d.program)
    assert execute(program, [s.value for s in d.spans], connected=True).value == 27


TWO_TAIL_STEPS = (  # two span-free steps at the end, and no template computes the answer
    "Tom buys 3 boxes of 4 pens. How many pens?",
    "3*4=<<3*4=12>>12 pens. Twice that is 12*2=<<12*2=24>>24, and 24+12=<<24+12=36>>36."
    "\n#### 36",
)


def test_several_learned_steps_when_the_search_allows_them(monkeypatch) -> None:
    from mycelium.runtime.gold import align

    assert derive(*TWO_TAIL_STEPS).reason == "multi_step_tail"
    monkeypatch.setattr(align, "SEARCH", replace(align.SEARCH, learned_steps=2))
    d = derive(*TWO_TAIL_STEPS)
    assert d.reachable and d.tail == "LEARNED"
    assert _program(d) == [("MUL", "Q0 Q1", [0, 1]), ("MUL", "R1 C2", []),
                           ("ADD", "R1 R2", [])]
    assert execute(to_executor(d.program), [s.value for s in d.spans]).value == 36


def test_text_order_only_search_cannot_reach_the_conflict(text_order_only) -> None:
    d = derive(*CONFLICT)
    assert not d.reachable and d.reason == "order_conflict"


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        (NONCONTIGUOUS, "noncontiguous_group"),
        (("Ann has 5 pens.", "5*13=<<5*13=65>>65\n#### 65"), "unaligned_operand:integer"),
        (("Ann has 5 pens.", "5*2=<<5*2=10>>10\n#### 11"), "answer_not_a_step_result"),
        (("Ann has 5 pens.", "It is 5 words.\n#### 5"), "no_annotation"),
        (("Ann has 40 pens.", "40//3=<<40//3=13>>13\n#### 13"),
         "annotation:unsupported_operator:FloorDiv"),
        (("Ann has 40 pens.", "no final answer"), "bad_final_answer"),
    ],
)
def test_unreachable_reasons(problem: tuple[str, str], reason: str) -> None:
    d = derive(*problem)
    assert not d.reachable and d.reason == reason


def test_aligned_but_unreachable_keeps_its_gold_program() -> None:
    d = derive(*NONCONTIGUOUS)
    assert d.aligned and [s.text for s in d.spans] == ["15", "3", "4"]
    assert d.used == [True, True, True]
    assert _program(d) == [("MUL", "Q0 Q2", [0, 2]), ("ADD", "Q1 R1", [1])]


def test_a_group_may_skip_a_span_when_the_search_allows_it() -> None:
    d = derive(*NONCONTIGUOUS, search=SearchSpec(group_gap=1))
    assert d.reachable
    assert _program(d) == [("MUL", "Q0 Q2", [0, 2]), ("ADD", "Q1 R1", [1])]
    assert execute(to_executor(d.program), [s.value for s in d.spans]).value == 63
    wide = ("Tom has 15 pens, 3 cups, 2 hats and 4 boxes.",
            "15*4=<<15*4=60>>60. 60+3=<<60+3=63>>63. 63+2=<<63+2=65>>65\n#### 65")
    assert derive(*wide, search=SearchSpec(group_gap=1)).reason == "noncontiguous_group"
    assert _program(derive(*wide, search=SearchSpec(group_gap=2)))[0] == (
        "MUL", "Q0 Q3", [0, 3])


def test_data_command_fits_the_programs_to_the_given_search(tmp_path: Path) -> None:
    source = tmp_path / "gsm8k.jsonl"
    source.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                              for q, a in (NATALIA, NONCONTIGUOUS)))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["data", "--data", str(source), "--out", str(out),
                                       "--vocab-size", "300", "--search", "group_gap=1",
                                       "--reject-groups"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert records[1]["reachable"] and records[1]["program"][0]["group"] == [0, 2]
    coverage = json.loads((out / "coverage.json").read_text())
    assert coverage["search"] == {"group_gap": 1}
    rejects = [json.loads(line) for line in (out / "classifier.jsonl").read_text().splitlines()
               if json.loads(line)["op"] == "NONE" and json.loads(line)["id"] == 1]
    # the gapped group is a step; the search's other gapped window (none here: 3 spans)
    assert sorted(tuple(i for i, _ in r["group"]) for r in rejects) == [
        (), (0,), (0, 1), (0, 1, 2), (1, 2), (2,)]


def test_data_command_reject_flips_needs_reject_groups(tmp_path: Path) -> None:
    source = tmp_path / "gsm8k.jsonl"
    source.write_text(json.dumps({"question": NATALIA[0], "answer": NATALIA[1]}) + "\n")
    args = ["data", "--data", str(source), "--out", str(tmp_path / "out"), "--vocab-size",
            "300", "--reject-flips"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "needs --reject-groups" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, [*args, "--reject-groups"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "coverage.json").read_text())["reject_flips"]


def test_data_command_rejects_an_unknown_search_setting(tmp_path: Path) -> None:
    source = tmp_path / "gsm8k.jsonl"
    source.write_text(json.dumps({"question": NONCONTIGUOUS[0], "answer": NONCONTIGUOUS[1]})
                      + "\n")
    result = CliRunner().invoke(main, ["data", "--data", str(source), "--out",
                                       str(tmp_path / "out"), "--search", "group_gaps=1"])
    assert result.exit_code == 2 and "group_gaps=1" in result.output
    assert "Traceback" not in result.output


def test_span_value_read_as_constant_only_when_allowed(text_order_only) -> None:
    strict = derive(*SPAN_CONSTANT)  # off by default: a text number is always a Q
    assert not strict.reachable and strict.reason == "order_conflict"
    assert strict.used == [True, True, True]
    d = derive(*SPAN_CONSTANT, constant_for_span=True)
    assert d.reachable and d.span_as_constant and not d.first_alignment
    assert d.used == [False, True, True]  # the 5 read as C5 is then unused
    assert _program(d) == [("MUL", "Q1 Q2", [1, 2]), ("ADD", "R1 C5", [])]


# ------------------------------------------------------------------ tokenizer
@pytest.fixture(scope="module")
def tokenizer():
    corpus = [NATALIA[0], NATALIA[1], PENS[0], "He paid $1,200 for twenty-five apples."] * 5
    return train_tokenizer(corpus, vocab_size=300)


def test_tokenizer_special_and_argument_tokens(tokenizer) -> None:
    assert tokenizer.token_to_id("<pad>") == 0
    for text in (" Q0 C2", " Q11 R3 C60 C1000", " " + " ".join(t.strip() for t in ARG_TOKENS)):
        encoding = tokenizer.encode(text, add_special_tokens=False)
        assert len(encoding.ids) == len(text.split())  # one token per argument
        assert tokenizer.decode(encoding.ids, skip_special_tokens=True) == text
    assert tokenizer.decode(tokenizer.encode("Q0 C2").ids).split() == ["Q0", "C2"]
    assert " " + CONSTANTS[Fraction(1, 2)] in ARG_TOKENS


def test_tokenizer_is_byte_level_with_char_offsets(tokenizer) -> None:
    text = "Zoë paid €5 — 日本"
    encoding = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(encoding.ids) == text
    assert encoding.offsets[-1][1] == len(text)


def test_bio_labels_from_offsets(tokenizer) -> None:
    text = "He paid $1,200 for twenty-five apples."
    spans = [(8, 14), (19, 30)]
    encoding = tokenizer.encode(text, add_special_tokens=False)
    labels = bio_labels(tokenizer, text, spans)
    assert len(labels) == len(encoding.ids)
    for (start, end), label in zip(encoding.offsets, labels, strict=True):
        inside = [i for i, (a, b) in enumerate(spans) if start < b and end > a]
        assert (label != 0) == bool(inside)
    firsts = [i for i, label in enumerate(labels) if label == 1]
    assert len(firsts) == 2
    for first in firsts:
        assert encoding.offsets[first][0] <= spans[firsts.index(first)][0]
    assert bio_labels(tokenizer, text, [{"start": 8, "end": 14}]).count(1) == 1


def test_bio_labels_used_and_unused(tokenizer) -> None:
    assert SEGMENTER_LABELS == ("O", "B-QTY", "I-QTY", "B-UNUSED", "I-UNUSED")
    text = "He paid $1,200 for twenty-five apples."
    spans = [(8, 14), (19, 30)]
    all_used = bio_labels(tokenizer, text, spans)
    assert bio_labels(tokenizer, text, spans, [True, True]) == all_used
    mixed = bio_labels(tokenizer, text, spans, [False, True])
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    for (start, end), label, plain in zip(offsets, mixed, all_used, strict=True):
        if start < 14 and end > 8:  # the unused span: B/I-UNUSED where it was B/I-QTY
            assert label == plain + 2
        else:
            assert label == plain
    assert mixed.count(3) == 1 and mixed.count(1) == 1
    with pytest.raises(ValueError):
        bio_labels(tokenizer, text, spans, [True])


# ------------------------------------------------------------------ the data command
def test_data_command(tmp_path: Path) -> None:
    problems = [NATALIA, PENS, WEEK, SWAPPED, TEMPLATE, NONCONTIGUOUS,
                ("Ann has 5 pens.", "5*13=<<5*13=65>>65\n#### 65"), DISTRACTOR]
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in problems))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["data", "--data", str(data), "--out", str(out),
                                       "--vocab-size", "300"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert [r["split"] for r in records] == ["dev"] + ["train"] * 7
    assert [r["reachable"] for r in records] == [True] * 5 + [False] * 2 + [True]
    assert [r["aligned"] for r in records] == [True] * 6 + [False, True]
    assert records[0]["spans"] == [
        {"start": 22, "end": 24, "text": "48", "value": "48", "used": True},
        {"start": 68, "end": 72, "text": "half", "value": "1/2", "used": False},
    ]
    assert records[0]["program"][1] == {"op": "ADD", "args": ["Q0", "R1"], "group": []}
    assert records[0]["answer"] == "72" and records[5]["reason"] == "noncontiguous_group"
    assert [s["used"] for s in records[6]["spans"]] == [None]  # unaligned: unknown
    segmenter = [json.loads(line) for line in (out / "segmenter.jsonl").read_text().splitlines()]
    assert [r["id"] for r in segmenter] == [0, 1, 2, 3, 4, 5, 7]  # aligned, reachable or not
    assert segmenter[0]["spans"] == [[22, 24], [68, 72]]
    assert segmenter[0]["used"] == [True, False]
    assert segmenter[-1]["used"] == [True, False, True, True]
    extractor = [json.loads(line) for line in (out / "extractor.jsonl").read_text().splitlines()]
    classifier = (out / "classifier.jsonl").read_text().splitlines()
    # templates excluded; the aligned but unreachable train problem adds its 2 gold steps
    assert len(extractor) == len(classifier) == 2 + 2 + 2 + 3 + 3 + 2 + 2
    conflict = [r for r in extractor if r["id"] == 5]
    assert [(r["group"], r["op"], r["target"], r["reachable"]) for r in conflict] == [
        ([[0, "15"], [2, "4"]], "MUL", "Q0 Q2", False), ([[1, "3"]], "ADD", "Q1 R1", False)]
    assert all(r["reachable"] for r in extractor if r["id"] != 5)
    assert extractor[0]["group"] == [[0, "48"]] and extractor[0]["target"] == "Q0 C2"
    assert extractor[-2]["group"] == [[0, "3"], [2, "12"]]  # global indices
    assert extractor[-2]["target"] == "Q0 Q2" and extractor[-1]["target"] == "R1 Q3"
    assert "target" not in json.loads(classifier[0])
    coverage = json.loads((out / "coverage.json").read_text())
    assert coverage["span_constants"] is False
    train = coverage["splits"]["train"]
    assert train["problems"] == 7 and train["reachable"] == 5 and train["segmenter"] == 6
    assert train["reasons"] == {"noncontiguous_group": 1, "unaligned_operand:integer": 1}
    assert train["aligned_quantities_used"] == train["aligned_quantities"] - 1
    assert (out / "tokenizer.json").is_file()
    assert coverage["unreachable_steps"] is True and train["step_records"] == 14
    strict = tmp_path / "strict"
    result = CliRunner().invoke(main, ["data", "--data", str(data), "--out", str(strict),
                                       "--vocab-size", "300", "--reachable-steps-only"])
    assert result.exit_code == 0, result.output
    assert len((strict / "extractor.jsonl").read_text().splitlines()) == 14


def test_learned_step_may_run_before_the_last_chunk() -> None:
    problem = ("Tom has 3 boxes of 4 pens and 5 cups.",
               "3*4=<<3*4=12>>12 pens, doubled 12*2=<<12*2=24>>24, plus 24+5=<<24+5=29>>29."
               "\n#### 29")
    d = derive(*problem)
    assert d.reachable and d.tail == "LEARNED"
    assert _program(d) == [("MUL", "Q0 Q1", [0, 1]), ("MUL", "R1 C2", []),
                           ("ADD", "Q2 R1", [2])]
    program = to_executor(d.program)
    assert execute(program, [s.value for s in d.spans], connected=True).value == 29


def test_learned_step_inside_needs_permuted_search(text_order_only) -> None:
    problem = ("Tom has 3 boxes of 4 pens and 5 cups.",
               "3*4=<<3*4=12>>12 pens, doubled 12*2=<<12*2=24>>24, plus 24+5=<<24+5=29>>29."
               "\n#### 29")
    d = derive(*problem)
    assert not d.reachable and d.reason == "span_free_step_before_spans"


def test_reject_records_are_the_search_groups_that_are_no_step() -> None:
    from mycelium.train.data import reject_records

    spans = [{"start": 0, "end": 1, "text": "3", "used": True},
             {"start": 2, "end": 3, "text": "4", "used": False},
             {"start": 4, "end": 5, "text": "5", "used": True},
             {"start": 6, "end": 7, "text": "6", "used": True}]
    record = {"id": 7, "split": "train", "question": "3 4 5 6", "spans": spans,
              "program": [{"op": "ADD", "args": ["Q0", "Q2"], "group": [0, 2]},
                          {"op": "MUL", "args": ["R1", "Q3"], "group": [3]}]}
    rejects = list(reject_records(record))
    groups = sorted(tuple(i for i, _ in r["group"]) for r in rejects)
    # windows over the used spans (0, 2, 3) of 1..3 spans, and (), minus the two steps
    assert groups == [(), (0,), (0, 2, 3), (2,), (2, 3)]
    assert {r["op"] for r in rejects} == {"NONE"}
    assert all(r["spans"] == [[0, 1], [2, 3], [4, 5], [6, 7]] for r in rejects)
    # with flips: also the windows of the sets one quantity away ({0,1,2,3}, {2,3},
    # {0,3}, {0,2}); the unused span 1 now appears in groups of its own
    flipped = sorted(tuple(i for i, _ in r["group"]) for r in reject_records(record,
                                                                            flips=True))
    assert set(groups) < set(flipped)
    assert set(flipped) - set(groups) == {(0, 1), (0, 1, 2), (1,), (1, 2), (1, 2, 3),
                                          (0, 3)}
    assert (0, 2) not in flipped and (3,) not in flipped  # the gold steps never


def test_the_data_command_names_a_bad_line_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "gsm8k.jsonl"
    source.write_text(json.dumps({"question": NATALIA[0], "answer": NATALIA[1]}) + "\n\n"
                      + json.dumps({"question": NATALIA[0], "answer": 72}) + "\n")
    result = CliRunner().invoke(main, ["data", "--data", str(source), "--out",
                                       str(tmp_path / "out"), "--vocab-size", "300"])
    assert result.exit_code == 1, result.output
    assert "line 3: needs string fields 'question' and 'answer'" in result.output
    assert "Traceback" not in result.output
