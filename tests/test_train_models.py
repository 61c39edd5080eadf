"""Trainer tests on a synthetic supervision folder and tiny models (no real training)."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2ForTokenClassification,
)

from mycelium.runtime.spec import (  # noqa: E402
    MARKED_TEMPLATES,
    REJECT,
    SearchSpec,
    SolverSpec,
    fit_answer_prior,
)
from mycelium.runtime.templates import (  # noqa: E402
    classifier_suffix,
    extractor_suffix,
    marked_problem,
)
from mycelium.train.batching import collate_packed  # noqa: E402
from mycelium.train.config import FitConfig  # noqa: E402
from mycelium.train.factory import build_model  # noqa: E402
from mycelium.train.items import classifier_items, extractor_items, read_jsonl, segmenter_items  # noqa: E402
from mycelium.train.labels import spans_from_bio  # noqa: E402
from mycelium.train.loop import make_optimizer, seed_everything, train_task  # noqa: E402
from mycelium.train.models import (  # noqa: E402
    SIZES,
    TokenIds,  # noqa: E402
    export_bytes,
    parameter_count,
)
from mycelium.train.tasks import ClassifierTask, ExtractorTask, packed_logits, reject_class_weights  # noqa: E402
from mycelium.train.tokenizer import train_tokenizer  # noqa: E402
from mycelium.train.trainer import data_search, fit, train_answers  # noqa: E402
from mycelium.train.vocab import Vocab  # noqa: E402

torch.set_num_threads(2)

_NAMES = ("Tom", "Ann", "Lee", "Maria", "Sam", "Priya")
_ITEMS = ("apples", "pens", "books", "cookies", "marbles", "eggs")


def _problem(rng: random.Random) -> tuple[str, list[list[int]], list[tuple[list[int], str, str]]]:
    """A question, its quantity spans and (span indices, op, target) steps."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
    parts = [f"{name} has ", str(a), f" {item}. She buys ", str(b),
             " more and then packs them in groups of ", str(c), ". How many groups?"]
    text, spans = "", []
    for i, part in enumerate(parts):
        if i % 2 == 1:
            spans.append([len(text), len(text) + len(part)])
        text += part
    steps = [([0, 1], "ADD", "Q0 Q1"), ([2], "DIV", "R1 Q2")]
    return text, spans, steps


def write_data(folder: Path, n_train: int = 24, n_dev: int = 6, seed: int = 0) -> Path:
    """The files of `mycelium-train data`, synthetic: jsonl files and tokenizer.json."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    spec = SolverSpec()
    seg, cls, ext, corpus = [], [], [], []
    for k in range(n_train + n_dev):
        split = "train" if k < n_train else "dev"
        question, spans, steps = _problem(rng)
        seg.append({"id": f"p{k}", "split": split, "question": question, "spans": spans})
        corpus.append(marked_problem(spec.templates, question, spans))
        for s, (indices, op, target) in enumerate(steps):
            group = [[i, question[spans[i][0]:spans[i][1]]] for i in indices]
            base = {"id": f"p{k}-{s}", "split": split, "question": question, "spans": spans,
                    "group": group}
            cls.append({**base, "op": op})
            ext.append({**base, "op": op, "target": target})
            corpus.append(extractor_suffix(spec.templates, group, op) + " " + target)
            corpus.append(classifier_suffix(spec.templates, group))
    problems = [{"id": r["id"], "split": r["split"], "answer": str(rng.choice([3, 12, -2]))}
                for r in seg]
    for name, rows in (("segmenter", seg), ("classifier", cls), ("extractor", ext),
                       ("problems", problems)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
    train_tokenizer(corpus, vocab_size=300).save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def vocab(data: Path) -> Vocab:
    return Vocab.load(data / "tokenizer.json", SolverSpec())


def test_bio_labels_roundtrip(data: Path, vocab: Vocab) -> None:
    spec = SolverSpec()
    items = segmenter_items(read_jsonl(data / "segmenter.jsonl"), "train", vocab, spec)
    assert items and all(len(i.ids) == len(i.labels) for i in items)
    for item in items:
        assert set(item.labels) <= {0, 1, 2, 3, 4}
        assert spans_from_bio(item.question, item.offsets, item.labels) == item.gold


@pytest.mark.parametrize("marked", [False, True])
def test_inputs_match_runtime_templates(data: Path, vocab: Vocab, marked: bool) -> None:
    spec = SolverSpec(templates=MARKED_TEMPLATES) if marked else SolverSpec()
    records = read_jsonl(data / "extractor.jsonl")
    items = extractor_items(records, "train", vocab, spec)
    first = records[0]
    text = marked_problem(spec.templates, first["question"], first["spans"])
    assert (text != first["question"] and " Q2" in text) == marked  # every span marked
    q = vocab.tokenizer.encode(text, add_special_tokens=False).ids
    suffix = vocab.tokenizer.encode(
        extractor_suffix(spec.templates, first["group"], first["op"]), add_special_tokens=False
    ).ids
    target = vocab.tokenizer.encode(" " + first["target"], add_special_tokens=False).ids
    assert items[0].question == q
    assert items[0].blocks[0] == suffix + target + [vocab.eos]
    assert items[0].labels[0] == len(suffix)


def test_packed_rows_equal_separate_sequences(data: Path, vocab: Vocab) -> None:
    """The block mask and position ids make packing exact."""
    spec = SolverSpec()
    cls_items = classifier_items(read_jsonl(data / "classifier.jsonl"), "dev", vocab, spec)
    ext_items = extractor_items(read_jsonl(data / "extractor.jsonl"), "dev", vocab, spec)
    config = FitConfig(size="tiny")
    for name, items in (("classifier", cls_items[:3]), ("extractor", ext_items[:3])):
        model = build_model(name, config, vocab, spec, seed=1).eval()
        head = model.score if name == "classifier" else model.lm_head
        batch = collate_packed(items, vocab.pad, extractor=name == "extractor")
        with torch.no_grad():
            packed = packed_logits(model, batch, head)
            separate = []
            for item in items:
                for block, start in zip(item.blocks, item.labels, strict=True):
                    ids = torch.tensor([item.question + block])
                    logits = model(input_ids=ids).logits
                    if name == "classifier":  # pooled at the last token: (1, labels)
                        separate.append(logits)
                    else:
                        q = len(item.question)
                        separate.append(logits[0, q + start - 1: q + len(block) - 1])
        torch.testing.assert_close(packed, torch.cat(separate), atol=1e-4, rtol=1e-4)


def test_memorises_micro_set(data: Path, vocab: Vocab) -> None:
    spec = SolverSpec()
    items = extractor_items(read_jsonl(data / "extractor.jsonl"), "train", vocab, spec)[:4]
    task = ExtractorTask(items, items, vocab, spec)
    config = FitConfig(size="tiny", lr=1e-2, warmup_steps=1)
    model = build_model("extractor", config, vocab, spec, seed=0)
    optimizer = make_optimizer(model, config)
    batch = task.collate(items)
    losses = []
    for _ in range(60):
        loss = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    figures = task.evaluate(model, torch.device("cpu"), 4)
    check = task.generate_check(model, torch.device("cpu"), 8)
    # teacher-forced exact match is greedy exact match
    assert figures["exact_match"] == check["generate_exact_match"]


def test_fit_writes_checkpoint_contract(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    config = FitConfig(size="tiny", epochs=2, minutes=0, batch_size=8, packed_batch_size=4,
                         warmup_steps=2, generate_eval=4)
    logs: list[str] = []
    report = fit(data, out, config, log=logs.append)
    written = json.loads((out / "mycelium.json").read_text())
    answers = list(train_answers(data))
    assert answers and written["answer_prior"] == fit_answer_prior(answers)
    spec = replace(SolverSpec(), answer_prior=written["answer_prior"])
    assert written == json.loads(json.dumps(spec.to_dict()))
    training = json.loads((out / "training.json").read_text())
    assert training["seed"] == 0 and training["config"]["size"] == "tiny"
    for name in ("segmenter", "classifier", "extractor"):
        folder = out / name
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
            p.name for p in folder.iterdir()}
        assert not list(folder.glob("*.bin"))
        assert len(training["models"][name]["epochs"]) == 2
    seg = Qwen2ForTokenClassification.from_pretrained(out / "segmenter")
    assert seg.config.id2label == {
        0: "O", 1: "B-QTY", 2: "I-QTY", 3: "B-UNUSED", 4: "I-UNUSED"}
    clf = Qwen2ForSequenceClassification.from_pretrained(out / "classifier")
    assert clf.config.id2label == dict(enumerate(spec.operations))
    assert clf.config.pad_token_id == 0
    ext = Qwen2ForCausalLM.from_pretrained(out / "extractor")
    assert ext.config.tie_word_embeddings and ext.config.hidden_size == SIZES["tiny"].hidden_size
    assert report["models"]["extractor"]["best_dev"]["generate_rows"] == 4
    assert any("epoch 2" in line for line in logs)


def test_training_is_reproducible(data: Path, vocab: Vocab) -> None:
    spec = SolverSpec()
    items = classifier_items(read_jsonl(data / "classifier.jsonl"), "train", vocab, spec)
    config = FitConfig(size="tiny", epochs=1, minutes=0, warmup_steps=1)
    states = []
    for _ in range(2):
        seed_everything(3)
        model = build_model("classifier", config, vocab, spec, seed=3)
        task = ClassifierTask(items, items[:2], vocab, spec)
        train_task(task, model, config, torch.device("cpu"), log=lambda _: None, batch_size=4)
        states.append(model.state_dict())
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


def test_a_checkpoint_serves_with_the_search_its_data_was_fitted_to(tmp_path: Path) -> None:
    assert data_search(tmp_path) == SearchSpec()  # no coverage.json: the defaults
    (tmp_path / "coverage.json").write_text(json.dumps(
        {"search": {"group_gap": 1, "tail_templates": ["AVG"]}}))
    assert data_search(tmp_path) == SearchSpec(group_gap=1, tail_templates=("AVG",))


def test_small_models_fit_the_export_budget() -> None:
    tokens = TokenIds(pad=0, eos=1, vocab_size=8192)
    from mycelium.train.models import build_classifier, build_extractor, build_segmenter

    spec = SolverSpec()
    built = [build_segmenter("small", tokens, spec.segmenter_labels),
             build_classifier("small", tokens, spec.operations),
             build_extractor("small", tokens)]
    assert SIZES["small"].head_dim == 64
    assert built[2].lm_head.weight is built[2].model.embed_tokens.weight
    assert parameter_count(built[2]) < parameter_count(built[0]) + 1024
    assert export_bytes(built) < 64 * 1024 * 1024


def test_pretrained_backbone_initialises_specialists(data: Path, tmp_path: Path) -> None:
    gsm8k = tmp_path / "gsm8k.jsonl"
    rows = read_jsonl(data / "segmenter.jsonl")
    answer = "x <<1+1=2>>2\n#### 2"
    gsm8k.write_text("".join(json.dumps({"question": r["question"], "answer": answer}) + "\n"
                             for r in rows))
    from mycelium.train.pretrain import pretrain_backbone, pretrain_corpus

    train, dev = pretrain_corpus(data, gsm8k)
    assert len(dev) == 6 and all("<<" not in t and "#### 2" in t for t in train)
    spec = SolverSpec()
    vocab = Vocab.load(data / "tokenizer.json", spec)
    config = FitConfig(size="tiny", pretrain_minutes=0.01)
    backbone, info = pretrain_backbone(data, vocab, spec, config, torch.device("cpu"),
                                       log=lambda _: None, answers=gsm8k)
    assert info["steps"] > 0
    from mycelium.train.models import load_backbone

    model = build_model("extractor", config, vocab, spec, seed=5)
    load_backbone(model, backbone)
    torch.testing.assert_close(model.lm_head.weight, backbone["embed_tokens.weight"])


def test_cli_fit(data: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mycelium.train.cli import main

    out = tmp_path / "cli_ckpt"
    result = CliRunner().invoke(main, ["fit", "--data", str(data), "--out", str(out), "--size",
                                       "tiny", "--epochs", "1", "--minutes", "0", "--device",
                                       "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "extractor: best epoch 1" in result.output
    assert json.loads((out / "training.json").read_text())["config"]["epochs"] == 1


def test_patience_stops_when_dev_stops_improving(data: Path, vocab: Vocab) -> None:
    spec = SolverSpec()
    items = classifier_items(read_jsonl(data / "classifier.jsonl"), "train", vocab, spec)
    model = build_model("classifier", FitConfig(size="tiny"), vocab, spec, seed=0)
    task = ClassifierTask(items, items[:2], vocab, spec)
    task.evaluate = lambda *_: {task.metric: 0.5}  # a dev figure that never improves
    logs: list[str] = []
    config = FitConfig(size="tiny", epochs=10, minutes=0, warmup_steps=1, patience=2)
    result = train_task(task, model, config, torch.device("cpu"), log=logs.append,
                          batch_size=4)
    assert result.best_epoch == 1 and len(result.history) == 3  # epochs 2 and 3 not better
    assert "stopping" in logs[-1]


def test_reject_label_trains_and_is_reported_apart(data: Path, tmp_path: Path) -> None:
    """Classifier records labelled NONE give a fifth label; accuracy stays on the steps."""
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    rows = read_jsonl(folder / "classifier.jsonl")
    rejects = [{**r, "group": [], "op": REJECT} for r in rows if r["op"] == "ADD"]
    with open(folder / "classifier.jsonl", "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rejects)
    config = FitConfig(size="tiny", epochs=1, minutes=0, packed_batch_size=4,
                         warmup_steps=1, models=("classifier",))
    report = fit(folder, tmp_path / "ckpt", config, log=lambda _: None)
    clf = Qwen2ForSequenceClassification.from_pretrained(tmp_path / "ckpt" / "classifier")
    assert clf.config.id2label == dict(enumerate((*SolverSpec().operations, REJECT)))
    dev = report["models"]["classifier"]["best_dev"]
    steps = sum(r["split"] == "dev" for r in rows)
    assert dev["groups"] == steps and 0 <= dev["reject_accuracy"] <= 1


def test_reject_weight_scales_the_reject_groups_loss(data: Path, vocab: Vocab) -> None:
    """`--reject-weight w`: a weighted mean with w on reject-labelled groups, 1 on steps."""
    spec = SolverSpec()
    task = ClassifierTask([], [], vocab, spec)
    logits = torch.randn(6, len(spec.operations) + 1)
    targets = torch.tensor([0, 1, 4, 4, 2, 4])  # index 4: the reject label
    plain = task.weighted_cross_entropy(logits, targets)
    assert torch.isclose(plain, torch.nn.functional.cross_entropy(logits, targets))
    task.class_weights = reject_class_weights(spec, 0.25)
    each = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    weights = torch.tensor([1.0, 1.0, 0.25, 0.25, 1.0, 0.25])
    expected = (each * weights).sum() / weights.sum()
    assert torch.isclose(task.weighted_cross_entropy(logits, targets), expected)
    assert not torch.isclose(expected, plain)


def test_reject_weight_needs_reject_records(data: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mycelium.train.cli import main

    result = CliRunner().invoke(main, ["fit", "--data", str(data), "--out",
                                       str(tmp_path / "ckpt"), "--model", "classifier",
                                       "--size", "tiny", "--epochs", "1", "--minutes", "0",
                                       "--device", "cpu", "--reject-weight", "0.5"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: --reject-weight needs classifier records with the reject label "
        "(`mycelium-train data --reject-groups`)")
