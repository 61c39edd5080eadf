"""Specialists started from a pretrained encoder (BERT family): the segmenter, and the
classifier reading one text pair per group. Train, export, serve.

The "pretrained" encoder is a tiny random BERT with a WordPiece tokenizer (and BERT's
pair post-processor) built here; no weights are downloaded.
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
onnx = pytest.importorskip("onnx")

from conftest import exports_once, with_positions  # noqa: E402
from test_train_models import write_data  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import (  # noqa: E402
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

from mycelium.export.checkpoint import validate_checkpoint  # noqa: E402
from mycelium.export.errors import CheckpointError  # noqa: E402
from mycelium.runtime import Solver  # noqa: E402
from mycelium.runtime.errors import ArtifactsError  # noqa: E402
from mycelium.runtime.manifest import load_manifest, parse_manifest  # noqa: E402
from mycelium.runtime.results import Span  # noqa: E402
from mycelium.runtime.segments import decode_spans  # noqa: E402
from mycelium.runtime.sessions import ShapeLimits, shape_profiles  # noqa: E402
from mycelium.runtime.spec import OPERATIONS, SEGMENTER_LABELS, SolverSpec  # noqa: E402
from mycelium.runtime.templates import group_pair  # noqa: E402
from mycelium.runtime.tokenization import Encoded, EncodedPair  # noqa: E402
from mycelium.train.config import FitConfig  # noqa: E402
from mycelium.train.trainer import fit  # noqa: E402

QUESTION = "Tom has 3 apples and buys 15 more. How many apples?"


@pytest.fixture(scope="module")
def mixed_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path,
                     encoder: Path) -> Path:
    """The tiny Qwen2 checkpoint with its segmenter and classifier replaced by encoders."""
    out = tmp_path_factory.mktemp("mixed") / "ckpt"
    shutil.copytree(tiny_checkpoint, out)
    for name, cls, labels in (("segmenter", BertForTokenClassification, SEGMENTER_LABELS),
                              ("classifier", BertForSequenceClassification, OPERATIONS)):
        shutil.rmtree(out / name)
        torch.manual_seed(1)
        model = cls.from_pretrained(encoder, num_labels=len(labels),
                                    id2label=dict(enumerate(labels)),
                                    label2id={n: i for i, n in enumerate(labels)})
        model.save_pretrained(out / name, safe_serialization=True)
        shutil.copyfile(encoder / "tokenizer.json", out / name / "tokenizer.json")
    return out


@pytest.fixture(scope="module")
def mixed_exports(tmp_path_factory: pytest.TempPathFactory, mixed_checkpoint: Path):
    """ExportReport of the mixed checkpoint per precision, each exported once."""
    return exports_once(tmp_path_factory, mixed_checkpoint, "mixed")


@pytest.mark.parametrize("role", ["segmenter", "classifier"])
def test_fit_starts_a_specialist_from_the_encoder(encoder: Path, tmp_path: Path,
                                                  role: str) -> None:
    data = write_data(tmp_path / "data")
    config = FitConfig(size="tiny", epochs=2, minutes=0, batch_size=8, packed_batch_size=8,
                       warmup_steps=2, models=(role,), init_lr=1e-3, classifier_head="pair",
                       **{f"{role}_init": str(encoder)})
    report = fit(data, tmp_path / "ckpt", config, log=lambda _text: None)
    folder = tmp_path / "ckpt" / role
    cls, labels = {"segmenter": (BertForTokenClassification, SEGMENTER_LABELS),
                   "classifier": (BertForSequenceClassification, OPERATIONS)}[role]
    model = cls.from_pretrained(folder)
    assert model.config.id2label == dict(enumerate(labels))
    # the encoder's own tokenizer travels with the specialist, not the data's BPE
    assert (folder / "tokenizer.json").read_bytes() == (encoder / "tokenizer.json").read_bytes()
    start = BertModel.from_pretrained(encoder).embeddings.word_embeddings.weight
    trained = model.bert.embeddings.word_embeddings.weight
    assert trained.shape == start.shape and not torch.equal(trained, start)
    assert report["parameters"][role] == sum(p.numel() for p in model.parameters())
    entry = report["models"][role]
    assert len(entry["epochs"]) == 2
    if role == "classifier":  # one pair per group: every train step record is an item
        records = [json.loads(line) for line in (data / "classifier.jsonl").open()]
        assert entry["train_items"] == sum(r["split"] == "train" for r in records)
        assert entry["best_dev"]["groups"] == sum(r["split"] == "dev" for r in records)


def test_a_classifier_can_keep_the_first_layers_of_its_encoder(encoder: Path,
                                                              tmp_path: Path) -> None:
    from mycelium.train.models import encoder_classifier

    model = encoder_classifier(encoder, OPERATIONS, layers=1)
    assert len(model.bert.encoder.layer) == 1 and model.config.num_hidden_layers == 1
    model.save_pretrained(tmp_path / "short", safe_serialization=True)
    again = BertForSequenceClassification.from_pretrained(tmp_path / "short")
    assert len(again.bert.encoder.layer) == 1
    full = BertModel.from_pretrained(encoder)
    assert torch.equal(again.bert.encoder.layer[0].output.dense.weight,
                       full.encoder.layer[0].output.dense.weight)  # the first layer kept
    with pytest.raises(ValueError, match="classifier layers 3: the encoder has 2"):
        encoder_classifier(encoder, OPERATIONS, layers=3)


def test_group_pair_marks_the_group_in_the_text() -> None:
    templates = SolverSpec().templates
    spans = [(8, 9), (26, 28)]
    assert group_pair(templates, QUESTION, spans, [(1, "15")]) == (
        "Tom has 3 apples and buys [ 15 ] more. How many apples?", "15")
    assert group_pair(templates, QUESTION, spans, [(0, "3"), (1, "15")]) == (
        "Tom has [ 3 ] apples and buys [ 15 ] more. How many apples?", "3 15")
    assert group_pair(templates, QUESTION, spans, []) == (QUESTION, "none")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_export_and_serve_an_encoder_segmenter(mixed_checkpoint: Path, encoder: Path,
                                               mixed_exports, precision: str) -> None:
    report = mixed_exports(precision)
    assert all(row.status == "ok" for row in report.parity), report.table()
    manifest = load_manifest(report.output)
    segmenter = manifest.models["segmenter"]
    assert segmenter.architecture == "bert" and segmenter.kv_cache is None
    assert segmenter.special_tokens["pad"] == 0  # [PAD], named by the encoder's config
    assert manifest.summary()["models"]["segmenter"]["architecture"] == "bert"
    graph = onnx.load(str(report.output / "segmenter.onnx"))
    stored = {init.data_type for init in graph.graph.initializer if len(init.dims) == 2}
    if precision == "int8":  # the word embeddings are quantized too, not kept in fp32
        assert onnx.TensorProto.FLOAT not in stored
    else:
        assert stored == {onnx.TensorProto.FLOAT}

    # the runtime reads the quantities exactly as the PyTorch segmenter marks them
    solver = Solver.load(report.output, provider="cpu")
    [result] = solver.solve([QUESTION], trace=True)
    tokenizer = Tokenizer.from_file(str(encoder / "tokenizer.json"))
    encoding = tokenizer.encode(QUESTION, add_special_tokens=False)
    model = BertForTokenClassification.from_pretrained(mixed_checkpoint / "segmenter").eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([encoding.ids])).logits[0]
    probs = torch.softmax(logits, -1).numpy()
    expected = decode_spans(QUESTION, Encoded(encoding.ids, encoding.offsets), probs,
                            SEGMENTER_LABELS)
    if precision == "fp32":
        assert [(s.start, s.end) for s in result.spans] == [(s.start, s.end) for s in expected]
        assert np.allclose([s.used_prob for s in result.spans],
                           [s.used_prob for s in expected], atol=1e-4)
    assert result.error is None or "no valid candidate" in result.error
    # a problem longer than max_problem_tokens is cut, not fed past the position table
    long = solver.solve([QUESTION * 40, QUESTION])
    assert [r.error is None or "no valid candidate" in r.error for r in long] == [True, True]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_export_and_serve_an_encoder_classifier(mixed_checkpoint: Path, encoder: Path,
                                                mixed_exports, precision: str) -> None:
    report = mixed_exports(precision)
    manifest = load_manifest(report.output)
    classifier = manifest.models["classifier"]
    assert classifier.architecture == "bert" and classifier.kv_cache is None
    assert [t.name for t in classifier.inputs] == ["input_ids", "attention_mask",
                                                   "token_type_ids"]
    assert classifier.labels == OPERATIONS
    # TensorRT's profile admits a whole pair (problem, group, special tokens)
    limits = ShapeLimits(rows=64, problem_tokens=256, new_tokens=76)
    high = shape_profiles(classifier, limits)["trt_profile_max_shapes"]
    assert high == "input_ids:64x332,attention_mask:64x332,token_type_ids:64x332"
    assert {row.model: row.status for row in report.parity}["classifier"] == "ok"

    # the runtime's pairs are the tokenizer's own pair encoding, and its logits PyTorch's
    solver = Solver.load(report.output, provider="cpu")
    spans = [(8, 9), (26, 28)]
    groups = [[(0, "3"), (1, "15")], [(1, "15")], []]
    pairs = [group_pair(solver.spec.templates, QUESTION, spans, g) for g in groups]
    encoded = solver.tokenizers["classifier"].encode_pairs(pairs, 256, 64)
    tokenizer = Tokenizer.from_file(str(encoder / "tokenizer.json"))
    reference = [tokenizer.encode(a, b) for a, b in pairs]
    assert [e.ids for e in encoded] == [r.ids for r in reference]
    assert [e.type_ids for e in encoded] == [r.type_ids for r in reference]
    assert encoded[0].type_ids[-1] == 1 and encoded[0].type_ids[0] == 0
    model = BertForSequenceClassification.from_pretrained(mixed_checkpoint / "classifier").eval()
    expected = []
    with torch.no_grad():
        for r in reference:
            expected.append(model(input_ids=torch.tensor([r.ids]),
                                  token_type_ids=torch.tensor([r.type_ids])).logits[0].numpy())
    got = solver.classifier.logits(encoded)  # one right-padded batch
    atol = 1e-4 if precision == "fp32" else 0.2
    np.testing.assert_allclose(got, np.stack(expected), atol=atol)

    # solving tries each group's top operations by the PyTorch classifier
    gold = [Span(a, b, QUESTION[a:b], Fraction(QUESTION[a:b])) for a, b in spans]
    [result] = solver.solve([QUESTION], spans=[gold], trace=True)
    assert result.trace is not None and result.trace.variants
    k = solver.spec.search.ops_per_group
    for group, variants in result.trace.variants.items():
        items = [(i, QUESTION[spans[i][0]:spans[i][1]]) for i in group]
        a, b = group_pair(solver.spec.templates, QUESTION, spans, items)
        ids = tokenizer.encode(a, b)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids.ids]),
                           token_type_ids=torch.tensor([ids.type_ids])).logits[0]
        top = {OPERATIONS[i] for i in torch.argsort(logits, descending=True)[:k].tolist()}
        if precision == "fp32":
            assert {v.op for v in variants} == top


def test_a_classifier_encoder_needs_a_pair_post_processor_and_positions(
        mixed_checkpoint: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(mixed_checkpoint, plain)
    path = plain / "classifier" / "tokenizer.json"
    raw = json.loads(path.read_text())
    raw["post_processor"] = None
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="no post-processor joining a text pair"):
        validate_checkpoint(plain)
    short = tmp_path / "short"
    shutil.copytree(mixed_checkpoint, short)
    path = short / "classifier" / "config.json"
    config = json.loads(path.read_text())
    config["max_position_embeddings"] = 300  # the problem fits, the pair (256 + 64 + 3) not
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"max_position_embeddings 300 .* \(323\)"):
        validate_checkpoint(short)


def test_a_classifier_without_cache_must_read_pairs(mixed_exports) -> None:
    raw = json.loads((mixed_exports("fp32").output / "manifest.json").read_text())
    raw["models"]["classifier"]["inputs"] = raw["models"]["classifier"]["inputs"][:2]
    with pytest.raises(ArtifactsError, match="needs a kv_cache .* got input_ids, attention_mask$"):
        parse_manifest(raw)


def test_an_encoder_shorter_than_the_problems_is_refused(mixed_checkpoint: Path,
                                                         tmp_path: Path) -> None:
    short = with_positions(mixed_checkpoint, tmp_path / "short", "segmenter", 128)
    with pytest.raises(CheckpointError, match="max_position_embeddings 128 is below"):
        validate_checkpoint(short)


def test_torch_baseline_serves_the_encoder_segmenter(mixed_checkpoint: Path,
                                                     mixed_exports) -> None:
    """The benchmarks' PyTorch-eager baseline loads the encoder and matches its export."""
    from benchmarks.torch_runners import load_torch_solver

    report = mixed_exports("fp32")
    onnx_solver = Solver.load(report.output, provider="cpu")
    eager = load_torch_solver(mixed_checkpoint, report.output)
    ids = [e.ids for e in onnx_solver.tokenizers["segmenter"].encode_batch([QUESTION, "Hi"])]
    for got, ref in zip(eager.segmenter.label_probs(ids),
                        onnx_solver.segmenter.label_probs(ids), strict=True):
        np.testing.assert_allclose(got, ref, atol=1e-4)
    pairs = onnx_solver.tokenizers["classifier"].encode_pairs(
        [(QUESTION, "3 15"), ("Hi", "none")], 256, 64)
    assert all(isinstance(p, EncodedPair) for p in pairs)
    np.testing.assert_allclose(eager.classifier.logits(pairs),
                               onnx_solver.classifier.logits(pairs), atol=1e-4)
    assert eager.solve([QUESTION])[0].error == onnx_solver.solve([QUESTION])[0].error


def test_provenance_ignores_a_scorer_added_after_export(mixed_checkpoint: Path,
                                                        mixed_exports) -> None:
    from dataclasses import replace

    from benchmarks.provenance import check_exported_from
    from mycelium.runtime.verifier import FEATURES

    manifest = load_manifest(mixed_exports("fp32").output)
    width = len(FEATURES)
    scorer = {"features": list(FEATURES), "mean": [0.0] * width, "scale": [1.0] * width,
              "weights": [0.0] * width}
    check_exported_from(mixed_checkpoint,
                        replace(manifest, mycelium={**manifest.mycelium, "answer_scorer": scorer}))
    other = {**manifest.mycelium, "max_new_tokens": manifest.mycelium["max_new_tokens"] + 1}
    with pytest.raises(ValueError, match="differs from the artifacts' manifest"):
        check_exported_from(mixed_checkpoint, replace(manifest, mycelium=other))
