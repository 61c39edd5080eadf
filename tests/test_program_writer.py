"""The program writer on a tiny random Qwen2 base written here: supervision, the cached
lower layers, training that resumes exactly, and the grammar beam end to end."""

from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mycelium.train.equations import Sources  # noqa: E402
from mycelium.train.program_writer import (  # noqa: E402
    build_cache,
    fit,
    read_examples,
)

QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many."
RECORD = {"id": 0, "split": "train", "question": QUESTION, "aligned": True,
          "spans": [{"value": "48"}, {"value": "1/2"}], "answer": "72",
          "program": [{"op": "DIV", "args": ["Q0", "C2"]}, {"op": "ADD", "args": ["Q0", "R1"]}]}


def _tiny_base(folder: Path) -> Path:
    """A 2-layer Qwen2 with a byte-level vocabulary (every character one token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Config, Qwen2ForCausalLM

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=len(vocab) - 1,
                         tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("writer")
    base = _tiny_base(root / "base")
    problems = root / "problems.jsonl"
    skipped = {**RECORD, "id": 1, "program": [{"op": "AVG", "args": ["Q0", "Q1"]}]}
    problems.write_text("".join(json.dumps(r) + "\n" for r in (RECORD, skipped)))
    run = root / "run"
    build_cache(base, problems, run, frozen=1, shard=1)
    config = json.loads((run / "writer.json").read_text())
    config.update(batch=1, save_every=3, lr=1e-2, warmup=1)
    (run / "writer.json").write_text(json.dumps(config))
    return base, problems, run


def test_examples_are_equations_of_the_four_operations(cached) -> None:
    _, problems, _ = cached
    (example,) = read_examples(problems, "train")  # the AVG template program is left out
    assert example["equations"].text == "48/2=24\n48+24=72\n"


def test_the_cache_is_kept_and_reused(cached) -> None:
    base, problems, run = cached
    (shard,) = sorted((run / "cache").glob("*.pt"))
    stamp = shard.stat().st_mtime_ns
    build_cache(base, problems, run, frozen=1, shard=1)
    assert shard.stat().st_mtime_ns == stamp
    (item,) = torch.load(shard, weights_only=False)
    assert item["states"].shape == (len(item["tokens"]), 32)
    assert item["states"].dtype == torch.bfloat16


def test_a_stopped_and_resumed_fit_ends_where_a_straight_one_does(cached, tmp_path: Path
                                                                   ) -> None:
    _, _, run = cached
    folders = []
    for name in ("straight", "resumed"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "writer.json").write_text((run / "writer.json").read_text())
        (folder / "cache").symlink_to(run / "cache")
        folders.append(folder)
    straight, resumed = folders
    assert fit(straight, epochs=8, threads=1)
    assert not fit(resumed, epochs=8, threads=1, stop_after=5)  # as if the session ended
    assert torch.load(resumed / "state.pt", weights_only=False)["step"] == 5
    assert not (resumed / "writer.pt").exists()
    assert fit(resumed, epochs=8, resume=True, threads=1)
    a, b = torch.load(straight / "writer.pt"), torch.load(resumed / "writer.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_overfitted_writer_writes_the_program(cached) -> None:
    from mycelium.train.writer_eval import Writer

    _, _, run = cached
    fit(run, epochs=150, threads=1)
    writer = Writer(run)
    sources = Sources(quantities=(F(48), F(1, 2)), constants=(F(2), F(60)))
    (programs,) = writer.beams([QUESTION], [sources], width=4)
    answer, score, text = programs[0]
    assert (answer, text) == (F(72), "48/2=24\n48+24=72\n")
    assert score > -1.0


GSM8K = [  # line 0 is dev under the fixed split; the others are train
    ("A car travels 50 miles per hour for 3 hours. How far does it go?",
     "50*3=<<50*3=150>>150 miles.\n#### 150"),
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
     "clips in May. How many clips did Natalia sell altogether in April and May?",
     "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
     "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"),
    ("Tom has 3 boxes with 12 pens each. He gives away 5 pens. How many pens are left?",
     "He has 3*12=<<3*12=36>>36 pens. He keeps 36-5=<<36-5=31>>31 pens.\n#### 31"),
]


def test_the_writer_command_runs_every_stage_once_and_refuses_a_foreign_run(
        tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mycelium.train.cli import main

    base = _tiny_base(tmp_path / "base")
    source = tmp_path / "gsm8k.jsonl"
    source.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                              for q, a in GSM8K))
    run = tmp_path / "run"
    args = ["writer", "--out", str(run), "--data", str(source), "--base-dir", str(base),
            "--epochs", "1", "--threads", "1"]
    result = CliRunner().invoke(main, [*args, "--frozen-layers", "1"])
    assert result.exit_code == 0, result.output
    assert "next: mycelium-export writer" in result.output
    problems = [json.loads(line) for line in (run / "data" / "problems.jsonl").open()]
    assert [p["split"] for p in problems] == ["dev", "train", "train"]
    (shard,) = sorted((run / "cache").glob("*.pt"))
    assert len(torch.load(shard, weights_only=False)) == 2  # the two train programs
    assert json.loads((run / "writer.json").read_text())["frozen_layers"] == 1
    trained = torch.load(run / "writer.pt")
    assert any(key.startswith("layers.0.") for key in trained)  # the base's layer 1

    stamp = shard.stat().st_mtime_ns
    again = CliRunner().invoke(main, [*args, "--frozen-layers", "1"])
    assert again.exit_code == 0, again.output
    assert "data: kept" in again.output and shard.stat().st_mtime_ns == stamp

    for frozen, message in (("0", "was started with --frozen-layers 1, not 0"),
                            ("2", "--frozen-layers 2 leaves none of the base's 2 layers")):
        refused = CliRunner().invoke(main, [*args, "--frozen-layers", frozen])
        assert refused.exit_code == 1 and message in refused.output
        assert "Traceback" not in refused.output


@pytest.mark.parametrize(("lines", "message"), [
    (["not json"], "line 1: not JSON"),
    ([json.dumps({"question": "Ann has 3 pens."})], "line 1: needs string fields"),
    ([json.dumps({"question": q, "answer": a}) for q, a in GSM8K[:1]],  # dev only
     "no train-split problem"),
])
def test_the_writer_command_refuses_unusable_data_in_one_line(tmp_path: Path, lines, message
                                                              ) -> None:
    from click.testing import CliRunner

    from mycelium.train.cli import main

    base = _tiny_base(tmp_path / "base")
    source = tmp_path / "gsm8k.jsonl"
    source.write_text("".join(line + "\n" for line in lines))
    result = CliRunner().invoke(main, ["writer", "--out", str(tmp_path / "run"), "--data",
                                       str(source), "--base-dir", str(base),
                                       "--frozen-layers", "1"])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "writer.pt").exists()
