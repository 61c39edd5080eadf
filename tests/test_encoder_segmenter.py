"""A segmenter started from a pretrained encoder (BERT family): train, export, serve.

The "pretrained" encoder is a tiny random BERT with a WordPiece tokenizer built here;
no weights are downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")

from test_train_models import write_data  # noqa: E402
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers  # noqa: E402
from transformers import BertConfig, BertForTokenClassification, BertModel  # noqa: E402

from mycelium.export import export_checkpoint  # noqa: E402
from mycelium.export.checkpoint import validate_checkpoint  # noqa: E402
from mycelium.export.errors import CheckpointError  # noqa: E402
from mycelium.runtime import Solver  # noqa: E402
from mycelium.runtime.manifest import load_manifest  # noqa: E402
from mycelium.runtime.segments import decode_spans  # noqa: E402
from mycelium.runtime.spec import SEGMENTER_LABELS  # noqa: E402
from mycelium.runtime.tokenization import Encoded  # noqa: E402
from mycelium.train import trainer as T  # noqa: E402

QUESTION = "Tom has 3 apples and buys 15 more. How many apples?"


def _wordpiece(folder: Path) -> Tokenizer:
    """An uncased WordPiece tokenizer: specials, characters, their ## forms, a few words."""
    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,?!$%'-"
    words = ["tom", "has", "apples", "and", "buys", "more", "how", "many", "groups", "##s"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars),
             *words]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(dict.fromkeys(vocab))},
                                           unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    return tokenizer


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 'pretrained' BERT folder: config.json, model.safetensors, tokenizer.json."""
    folder = tmp_path_factory.mktemp("encoder")
    tokenizer = _wordpiece(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=256, pad_token_id=0)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def mixed_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path,
                     encoder: Path) -> Path:
    """The tiny Qwen2 checkpoint with its segmenter replaced by the encoder's."""
    out = tmp_path_factory.mktemp("mixed") / "ckpt"
    shutil.copytree(tiny_checkpoint, out)
    shutil.rmtree(out / "segmenter")
    torch.manual_seed(1)
    model = BertForTokenClassification.from_pretrained(
        encoder, num_labels=len(SEGMENTER_LABELS), id2label=dict(enumerate(SEGMENTER_LABELS)),
        label2id={n: i for i, n in enumerate(SEGMENTER_LABELS)})
    model.save_pretrained(out / "segmenter", safe_serialization=True)
    shutil.copyfile(encoder / "tokenizer.json", out / "segmenter" / "tokenizer.json")
    return out


@pytest.fixture(scope="module")
def mixed_exports(tmp_path_factory: pytest.TempPathFactory, mixed_checkpoint: Path):
    """ExportReport of the mixed checkpoint per precision, each exported once."""
    reports = {}

    def export(precision: str):
        if precision not in reports:
            out = tmp_path_factory.mktemp(f"mixed_{precision}") / "art"
            reports[precision] = export_checkpoint(mixed_checkpoint, out, precision=precision,
                                                   log=lambda _text: None)
        return reports[precision]

    return export


def test_fit_starts_the_segmenter_from_the_encoder(encoder: Path, tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    config = T.FitConfig(size="tiny", epochs=2, minutes=0, batch_size=8, warmup_steps=2,
                         models=("segmenter",), segmenter_init=str(encoder), init_lr=1e-3)
    report = T.fit(data, tmp_path / "ckpt", config, log=lambda _text: None)
    folder = tmp_path / "ckpt" / "segmenter"
    model = BertForTokenClassification.from_pretrained(folder)
    assert model.config.id2label == dict(enumerate(SEGMENTER_LABELS))
    # the encoder's own tokenizer travels with the segmenter, not the data's BPE
    assert (folder / "tokenizer.json").read_bytes() == (encoder / "tokenizer.json").read_bytes()
    start = BertModel.from_pretrained(encoder).embeddings.word_embeddings.weight
    trained = model.bert.embeddings.word_embeddings.weight
    assert trained.shape == start.shape and not torch.equal(trained, start)
    assert report["parameters"]["segmenter"] == sum(p.numel() for p in model.parameters())
    assert len(report["models"]["segmenter"]["epochs"]) == 2


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


def test_an_encoder_shorter_than_the_problems_is_refused(mixed_checkpoint: Path,
                                                         tmp_path: Path) -> None:
    short = tmp_path / "short"
    shutil.copytree(mixed_checkpoint, short)
    path = short / "segmenter" / "config.json"
    config = json.loads(path.read_text())
    config["max_position_embeddings"] = 128
    path.write_text(json.dumps(config))
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
