"""The span-group classifier: an encoder reads each problem once and classifies every
span group from its spans' pooled token vectors. Inputs, model, train, export, serve.

The "pretrained" encoder is the tiny random BERT of conftest.py.
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")

from conftest import exports_once  # noqa: E402
from test_train_models import write_data  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import BertModel  # noqa: E402

from mycelium.export.checkpoint import validate_checkpoint  # noqa: E402
from mycelium.export.errors import CheckpointError  # noqa: E402
from mycelium.modeling.span_group import BertForSpanGroupClassification  # noqa: E402
from mycelium.runtime import Solver  # noqa: E402
from mycelium.runtime import classify as classify_module  # noqa: E402
from mycelium.runtime.errors import ArtifactsError  # noqa: E402
from mycelium.runtime.manifest import load_manifest, parse_manifest  # noqa: E402
from mycelium.runtime.results import Span  # noqa: E402
from mycelium.runtime.sessions import ShapeLimits, shape_profiles  # noqa: E402
from mycelium.runtime.spec import OPERATIONS, SolverSpec  # noqa: E402
from mycelium.runtime.tokenization import (  # noqa: E402
    GroupedProblem,
    encode_framed,
    group_feed,
    group_tokens,
    span_tokens,
)
from mycelium.train.config import FitConfig  # noqa: E402
from mycelium.train.factory import build_model  # noqa: E402
from mycelium.train.loop import make_optimizer  # noqa: E402
from mycelium.train.models import span_group_classifier  # noqa: E402
from mycelium.train.tasks.span_groups import (  # noqa: E402
    IGNORE,
    collate_groups,
    span_group_items,
)
from mycelium.train.trainer import fit  # noqa: E402
from mycelium.train.vocab import Vocab  # noqa: E402

QUESTION = "Tom has 3 apples and buys 15 more. How many apples?"
SPANS = [(8, 9), (26, 28)]


@pytest.fixture(scope="module")
def tokenizer(encoder: Path) -> Tokenizer:
    return Tokenizer.from_file(str(encoder / "tokenizer.json"))


@pytest.fixture(scope="module")
def model(encoder: Path) -> BertForSpanGroupClassification:
    torch.manual_seed(1)
    model = span_group_classifier(encoder, OPERATIONS).eval()
    with torch.no_grad():  # a head that is not all zeros where it starts so
        model.empty_group.normal_()
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, encoder: Path,
               model: BertForSpanGroupClassification) -> Path:
    """The tiny Qwen2 checkpoint with a span-group classifier."""
    out = tmp_path_factory.mktemp("span_groups") / "ckpt"
    shutil.copytree(tiny_checkpoint, out)
    shutil.rmtree(out / "classifier")
    model.save_pretrained(out / "classifier", safe_serialization=True)
    shutil.copyfile(encoder / "tokenizer.json", out / "classifier" / "tokenizer.json")
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path):
    """ExportReport per precision, each exported once."""
    return exports_once(tmp_path_factory, checkpoint, "span_groups")


def _torch_logits(model: BertForSpanGroupClassification,
                  rows: list[GroupedProblem]) -> np.ndarray:
    feed = group_feed(rows, 0)
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()


def test_inputs_frame_the_problem_and_mark_each_groups_tokens(tokenizer: Tokenizer) -> None:
    [framed] = encode_framed(tokenizer, [QUESTION], 256)
    assert framed.ids == tokenizer.encode(QUESTION).ids  # [CLS] ... [SEP], as the encoder reads
    assert framed.offsets[0] == (0, 0) and framed.offsets[-1] == (0, 0)
    per_span = span_tokens(framed.offsets, SPANS)
    assert ["".join(tokenizer.id_to_token(framed.ids[t]).lstrip("#") for t in ts)
            for ts in per_span] == ["3", "15"]
    assert group_tokens(per_span, [[1, 0], [], [1]]) == [sorted(per_span[0] + per_span[1]), [],
                                                        per_span[1]]
    cut = encode_framed(tokenizer, [QUESTION], 4)[0]  # the text is cut, the frame kept
    assert len(cut.ids) == 6 and cut.ids[-1] == tokenizer.token_to_id("[SEP]")
    feed = group_feed([GroupedProblem([5, 6, 7], [[1], [0, 2]]), GroupedProblem([5], [[]])], 0)
    assert feed["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert feed["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert feed["group_tokens"].tolist() == [[[0, 1, 0], [1, 0, 1]], [[0, 0, 0], [0, 0, 0]]]


def test_a_groups_logits_depend_on_its_problem_and_spans_only(
        model: BertForSpanGroupClassification, tokenizer: Tokenizer) -> None:
    [framed] = encode_framed(tokenizer, [QUESTION], 256)
    per_span = span_tokens(framed.offsets, SPANS)
    groups = group_tokens(per_span, [[0, 1], [1], []])
    alone = [_torch_logits(model, [GroupedProblem(framed.ids, [g])])[0, 0] for g in groups]
    together = _torch_logits(model, [GroupedProblem(framed.ids, groups)])[0]
    np.testing.assert_allclose(together, np.stack(alone), atol=1e-5)  # slots are independent
    other = encode_framed(tokenizer, ["How many more?"], 256)[0]
    batched = _torch_logits(model, [GroupedProblem(other.ids, [[]]),
                                    GroupedProblem(framed.ids, groups[::-1])])
    np.testing.assert_allclose(batched[1], together[::-1], atol=1e-5)  # right padding is inert
    assert not np.allclose(together[0], together[1])  # the spans matter
    # each group reads [first token; mean and max of its tokens], a span-free one the
    # learned empty vector
    with torch.no_grad():
        states = model.bert(input_ids=torch.tensor([framed.ids])).last_hidden_state[0]
        tokens = groups[1]
        pooled = torch.cat([states[0], states[tokens].mean(0), states[tokens].amax(0)])
        np.testing.assert_allclose(model.head(pooled).numpy(), together[1], atol=1e-5)
        empty = torch.cat([states[0], model.empty_group])
        np.testing.assert_allclose(model.head(empty).numpy(), together[2], atol=1e-5)


def test_items_hold_one_problem_each_with_labels_per_group(tmp_path: Path, encoder: Path) -> None:
    data = write_data(tmp_path / "data")
    records = [json.loads(line) for line in (data / "classifier.jsonl").open()]
    vocab = Vocab.for_encoder(encoder)
    items = span_group_items(records, "train", vocab, SolverSpec())
    train = [r for r in records if r["split"] == "train"]
    assert len(items) == len({r["question"] for r in train})
    assert sum(len(item.labels) for item in items) == len(train)
    assert all(len(item.groups) == len(item.labels) for item in items)
    batch = collate_groups(items[:2], vocab.pad)
    assert batch["group_tokens"].shape[:2] == batch["targets"].shape
    width = max(len(item.labels) for item in items[:2])
    short = min(range(2), key=lambda i: len(items[i].labels))
    assert (batch["targets"][short, len(items[short].labels):width] == IGNORE).all()
    with pytest.raises(ValueError, match="has no 'spans'"):
        span_group_items([{**train[0], "spans": None}], "train", vocab, SolverSpec())


def test_fit_trains_a_span_group_classifier(encoder: Path, tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    config = FitConfig(size="tiny", epochs=2, minutes=0, packed_batch_size=4, warmup_steps=2,
                         models=("classifier",), init_lr=1e-3, classifier_init=str(encoder),
                         classifier_head="span-groups")
    report = fit(data, tmp_path / "ckpt", config, log=lambda _text: None)
    folder = tmp_path / "ckpt" / "classifier"
    model = BertForSpanGroupClassification.from_pretrained(folder)
    assert model.config.architectures == ["BertForSpanGroupClassification"]
    assert model.config.id2label == dict(enumerate(OPERATIONS))
    start = BertModel.from_pretrained(encoder).embeddings.word_embeddings.weight
    assert not torch.equal(model.bert.embeddings.word_embeddings.weight, start)
    records = [json.loads(line) for line in (data / "classifier.jsonl").open()]
    entry = report["models"]["classifier"]
    assert entry["train_items"] == len({r["question"] for r in records if r["split"] == "train"})
    assert entry["best_dev"]["groups"] == sum(r["split"] == "dev" for r in records)
    # the fresh head trains at the decoder rate, the encoder at init_lr
    optimizer = make_optimizer(model, config, config.init_lr)
    head = {id(p) for p in model.head_parameters()}
    for group in optimizer.param_groups:
        fresh = {id(p) in head for p in group["params"]}
        assert len(fresh) == 1
        assert group["peak_lr"] == (config.lr if fresh == {True} else config.init_lr)
    with pytest.raises(ValueError, match="--classifier-layers applies to the pair classifier"):
        build_model("classifier", FitConfig(classifier_init=str(encoder), classifier_layers=1,
                                                classifier_head="span-groups"),
                      Vocab.for_encoder(encoder), SolverSpec(), seed=0)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_export_and_serve_a_span_group_classifier(checkpoint: Path, exports, precision: str,
                                                  model: BertForSpanGroupClassification,
                                                  tokenizer: Tokenizer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    report = exports(precision)
    assert all(row.status == "ok" for row in report.parity), report.table()
    classifier = load_manifest(report.output).models["classifier"]
    assert classifier.architecture == "bert" and classifier.kv_cache is None
    assert [t.name for t in classifier.inputs] == ["input_ids", "attention_mask", "group_tokens"]
    assert classifier.outputs[0].shape == ("batch", "groups", len(OPERATIONS))
    limits = ShapeLimits(rows=64, problem_tokens=256, new_tokens=76, group_slots=64)
    high = shape_profiles(classifier, limits)["trt_profile_max_shapes"]
    assert high == "input_ids:64x332,attention_mask:64x332,group_tokens:64x64x332"

    solver = Solver.load(report.output, provider="cpu")
    [framed] = solver.tokenizers["classifier"].encode_framed([QUESTION], 256)
    groups = group_tokens(span_tokens(framed.offsets, SPANS), [[0, 1], [1], []])
    rows = [GroupedProblem(framed.ids, groups), GroupedProblem(framed.ids[:5], [[2]])]
    atol = 1e-4 if precision == "fp32" else 0.25
    np.testing.assert_allclose(solver.classifier.logits(rows), _torch_logits(model, rows),
                               atol=atol)

    # solving tries each group's top operations by the PyTorch classifier
    gold = [Span(a, b, QUESTION[a:b], Fraction(QUESTION[a:b])) for a, b in SPANS]
    [result] = solver.solve([QUESTION], spans=[gold], trace=True)
    assert result.trace is not None and result.trace.variants
    k = solver.spec.search.ops_per_group
    if precision == "fp32":
        for group, variants in result.trace.variants.items():
            members = group_tokens(span_tokens(framed.offsets, SPANS), [list(group)])
            logits = _torch_logits(model, [GroupedProblem(framed.ids, members)])[0, 0]
            top = {OPERATIONS[i] for i in np.argsort(-logits)[:k]}
            assert {v.op for v in variants} == top

    # a problem with more groups than a row holds, and calls cut small, read the same (int8
    # activation scales are per call: nearly the same)
    same = 1e-5 if precision == "fp32" else 1e-2
    questions = [QUESTION, "Sam ran 2 miles and 3 miles.", QUESTION]
    bounds = [SPANS, [(8, 9), (20, 21)], SPANS]
    spans = [[Span(a, b, q[a:b], Fraction(q[a:b])) for a, b in s]
             for q, s in zip(questions, bounds, strict=True)]
    class_rows = [(p, items) for p in range(3)
                  for items in ([(0, spans[p][0].text)], [(1, spans[p][1].text)],
                                [(0, spans[p][0].text), (1, spans[p][1].text)], [])]
    assert solver.classifier_kind == "span_group_classifier"
    whole = solver.classify(questions, spans, class_rows)
    monkeypatch.setattr(classify_module, "GROUP_SLOTS", 3)
    monkeypatch.setattr(classify_module, "GROUP_CELLS_PER_CALL", 10)
    np.testing.assert_allclose(solver.classify(questions, spans, class_rows), whole,
                               atol=same)
    np.testing.assert_allclose(whole[:4], whole[8:], atol=same)  # same problem, same readings


def test_torch_baseline_serves_the_span_group_classifier(checkpoint: Path, exports) -> None:
    from benchmarks.torch_runners import load_torch_solver

    report = exports("fp32")
    onnx_solver = Solver.load(report.output, provider="cpu")
    eager = load_torch_solver(checkpoint, report.output)
    [framed] = onnx_solver.tokenizers["classifier"].encode_framed([QUESTION], 256)
    rows = [GroupedProblem(framed.ids, [[1, 2], [], [3]])]
    np.testing.assert_allclose(eager.classifier.logits(rows), onnx_solver.classifier.logits(rows),
                               atol=1e-4)
    assert eager.solve([QUESTION])[0].error == onnx_solver.solve([QUESTION])[0].error


def test_the_manifest_names_the_span_group_inputs(exports) -> None:
    raw = json.loads((exports("fp32").output / "manifest.json").read_text())
    parse_manifest(raw)
    inputs = raw["models"]["classifier"]["inputs"]
    raw["models"]["classifier"]["inputs"] = [inputs[0], inputs[2], inputs[1]]
    with pytest.raises(ArtifactsError, match="or input_ids, attention_mask, group_tokens"):
        parse_manifest(raw)


def test_positions_must_cover_the_framed_problem(checkpoint: Path, tmp_path: Path) -> None:
    assert validate_checkpoint(checkpoint).models["classifier"].span_groups
    short = tmp_path / "short"
    shutil.copytree(checkpoint, short)
    path = short / "classifier" / "config.json"
    config = json.loads(path.read_text())
    config["max_position_embeddings"] = 257  # the problem fits, [CLS] and [SEP] not
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"max_position_embeddings 257 .* \(258\)"):
        validate_checkpoint(short)
    config["architectures"] = ["BertForMaskedLM"]
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="is not BertForSequenceClassification or "
                                              "BertForSpanGroupClassification"):
        validate_checkpoint(short)
