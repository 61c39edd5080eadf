"""Shared fixtures: tiny random checkpoints and their exported artifacts (built once per run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is run from the repository, not installed
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """No test sees the user's MYCELIUM_* settings; TensorRT's engine cache goes to a
    temporary folder."""
    import os

    for name in [n for n in os.environ if n.startswith("MYCELIUM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MYCELIUM_TRT_CACHE", str(tmp_path_factory.getbasetemp() / "trt"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 checkpoint (segmenter, classifier, extractor), a few MB."""
    pytest.importorskip("torch")
    from benchmarks.make_checkpoint import make_checkpoint

    return make_checkpoint("tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _export(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, precision: str,
            stem: str = "art"):
    from mycelium.export import export_checkpoint

    out = tmp_path_factory.mktemp(f"{stem}_{precision}") / "artifacts"
    return export_checkpoint(checkpoint, out, precision=precision, log=lambda _text: None)


def exports_once(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, stem: str):
    """A function precision -> ExportReport of ``checkpoint``, each precision exported
    once."""
    reports = {}

    def export(precision: str):
        if precision not in reports:
            reports[precision] = _export(tmp_path_factory, checkpoint, precision, stem)
        return reports[precision]

    return export


def wordpiece(folder: Path):
    """An uncased WordPiece tokenizer with BERT's single and pair post-processor, saved as
    folder/tokenizer.json: specials, characters, their ## forms, a few words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,?!$%'-"
    words = ["tom", "has", "apples", "and", "buys", "more", "how", "many", "groups", "##s"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars),
             *words]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(dict.fromkeys(vocab))},
                                           unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer.save(str(folder / "tokenizer.json"))
    return tokenizer


@pytest.fixture(scope="session")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 'pretrained' BERT folder: config.json, model.safetensors, tokenizer.json (no
    weights are downloaded)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("encoder")
    tokenizer = wordpiece(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512, pad_token_id=0)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def fp32_export(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path):
    """ExportReport of the tiny checkpoint at fp32 (verified)."""
    return _export(tmp_path_factory, tiny_checkpoint, "fp32")


@pytest.fixture(scope="session")
def int8_export(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path):
    """ExportReport of the tiny checkpoint at int8 (verified)."""
    return _export(tmp_path_factory, tiny_checkpoint, "int8")


def with_positions(checkpoint: Path, folder: Path, role: str, positions: int) -> Path:
    """A copy of ``checkpoint`` in ``folder`` whose ``role`` has a position table of
    ``positions`` (config.json's max_position_embeddings)."""
    import json
    import shutil

    shutil.copytree(checkpoint, folder)
    path = folder / role / "config.json"
    config = json.loads(path.read_text())
    config["max_position_embeddings"] = positions
    path.write_text(json.dumps(config))
    return folder


def assert_replays(record: dict) -> None:
    """Assert that a solve record (``SolveResult.to_record()`` or a JSONL line) holds: an
    error and nothing else, or an answer that re-executing its program with the executor
    gives, every step's arguments and result as recorded."""
    from fractions import Fraction

    from mycelium.executor import TEMPLATES, Arg, Step, execute, format_fraction
    from mycelium.runtime.results import answer_number

    if record["error"] is not None:
        assert isinstance(record["error"], str) and record["error"]
        assert record["answer"] is None and record["answer_exact"] is None
        return
    program = record["program"]
    assert program, "an answer without a program"
    quantities: dict[int, Fraction] = {}
    constants: set[Fraction] = set()
    steps = []
    for number, step in enumerate(program):
        if step["op"] in TEMPLATES:  # a template reads every earlier result
            assert all(arg["source"] == "result" for arg in step["args"])
            steps.append(Step(step["op"], ()))
            continue
        args = []
        for arg in step["args"]:
            value = Fraction(arg["value"])
            if arg["source"] == "quantity":
                assert quantities.setdefault(arg["index"], value) == value
                args.append(Arg.quantity(arg["index"]))
            elif arg["source"] == "result":
                assert 0 <= arg["step"] < number
                args.append(Arg.result(number - arg["step"]))
            else:
                assert arg["source"] == "constant"
                constants.add(value)
                args.append(Arg.constant(value))
        steps.append(Step(step["op"], tuple(args)))
    values = [quantities.get(i, Fraction(0)) for i in range(max(quantities, default=-1) + 1)]
    executed = execute(tuple(steps), values, constants=frozenset(constants))
    assert executed.ok, executed.error
    assert len(executed.steps) == len(program)
    for trace, step in zip(executed.steps, program, strict=True):
        assert [format_fraction(value) for _, value in trace.args] == [
            arg["value"] for arg in step["args"]]
        assert format_fraction(trace.result) == step["result"]
    assert executed.value is not None
    assert record["answer_exact"] == format_fraction(executed.value) == program[-1]["result"]
    assert record["answer"] == answer_number(executed.value)
    assert 0.0 <= record["confidence"] <= 1.0
