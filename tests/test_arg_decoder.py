"""The extractor started from a pretrained encoder (train/arg_decoder.py): its tokenizer,
its causal reading with a KV cache, training, export and serving.

The "pretrained" encoder is the tiny random BERT of conftest (no weights downloaded).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import exports_once, with_positions  # noqa: E402
from test_train_models import write_data  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from mycelium.export.wrappers import additive_mask  # noqa: E402
from mycelium.runtime import Solver  # noqa: E402
from mycelium.runtime.manifest import load_manifest  # noqa: E402
from mycelium.runtime.spec import SolverSpec  # noqa: E402
from mycelium.train import trainer as T  # noqa: E402
from mycelium.train.arg_decoder import (  # noqa: E402
    BertForArgumentDecoding,
    argument_decoder,
    argument_tokenizer,
)

QUESTION = "Tom has 3 apples and buys 15 more. How many apples?"
GRAMMAR = ["<eos>", "<sep>", "<op>", "<args>", "Q0", "Q1", "Q10", "R1", "C1/2"]


def _tokenizer(encoder: Path, texts: list[str] = (QUESTION,)) -> tuple[Tokenizer, list[int], int]:
    text, source, outputs = argument_tokenizer(
        (encoder / "tokenizer.json").read_text("utf-8"), GRAMMAR, texts, ["MUL", "has"])
    return Tokenizer.from_str(text), source, outputs


def test_grammar_tokens_come_first_and_stay_whole(encoder: Path) -> None:
    tokenizer, source, outputs = _tokenizer(encoder)
    # pad, the grammar, then MUL (a word the vocabulary lacks; "has" it has)
    assert outputs == 1 + len(GRAMMAR) + 1
    assert [tokenizer.id_to_token(i) for i in range(outputs)] == ["[PAD]", *GRAMMAR, "MUL"]
    assert tokenizer.token_to_id("has") >= outputs
    assert source[0] == 0 and source[1:outputs] == [-1] * (outputs - 1)  # no [unusedN] rows
    enc = tokenizer.encode("buys<sep> Q0 3 Q10 15<op> MUL<args> Q1 C1/2 R1<eos>",
                           add_special_tokens=False)
    assert enc.tokens[:4] == ["buys", "<sep>", "Q0", "3"]
    assert enc.tokens[4] == "Q10"  # not Q1 then 0
    assert enc.tokens[-7:] == ["<op>", "MUL", "<args>", "Q1", "C1/2", "R1", "<eos>"]
    # the extractor's output decodes to the grammar's text (special tokens skipped)
    written = [tokenizer.token_to_id(t) for t in ("Q1", "C1/2", "R1", "<eos>")]
    assert all(i < outputs for i in written)
    assert tokenizer.decode(written, skip_special_tokens=True) == "Q1 C1/2 R1"


def test_the_vocabulary_is_cut_to_what_the_texts_use(encoder: Path) -> None:
    full = Tokenizer.from_file(str(encoder / "tokenizer.json"))
    tokenizer, source, _ = _tokenizer(encoder, ["tom has apples"])
    kept = set(tokenizer.get_vocab())
    assert {"tom", "apples", "has", "t", "##s", "[UNK]", "[CLS]"} <= kept
    assert "groups" not in kept and "groups" in full.get_vocab()
    # a cut word still tokenizes (into characters), to the same text
    enc = tokenizer.encode("groups", add_special_tokens=False)
    assert enc.tokens == ["g", "##r", "##o", "##u", "##p", "##s"]
    assert len(source) == tokenizer.get_vocab_size(with_added_tokens=True)
    for token, new in tokenizer.get_vocab().items():
        if source[new] >= 0:
            assert full.id_to_token(source[new]) == token
    with pytest.raises(ValueError, match="'tom' is already in the vocabulary"):
        argument_tokenizer((encoder / "tokenizer.json").read_text("utf-8"), ["tom"], [])


def test_cached_decoding_matches_the_full_causal_pass(encoder: Path) -> None:
    tokenizer, source, outputs = _tokenizer(encoder)
    torch.manual_seed(0)
    model = argument_decoder(encoder, source, outputs).eval()
    assert model.config.output_tokens == outputs and model.config.vocab_size == len(source)
    from transformers import BertModel

    # the encoder's rows re-indexed (the grammar's rows are fresh)
    start = BertModel.from_pretrained(encoder).embeddings.word_embeddings.weight
    rows = model.bert.embeddings.word_embeddings.weight
    for new in (outputs, outputs + 3):
        assert torch.equal(rows[new], start[source[new]])
    ids = torch.tensor([tokenizer.encode(QUESTION + "<sep> Q0=3<op> MUL<args>",
                                         add_special_tokens=False).ids])
    n, k = ids.shape[1], 7
    with torch.no_grad():
        full = model(ids).logits[0]  # (n, outputs)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        hidden, past = model.decode(ids[:, :k], additive_mask(causal[None, None, :k, :k],
                                                              torch.float32),
                                    torch.arange(k)[None])
        later, _ = model.decode(ids[:, k:], additive_mask(causal[None, None, k:], torch.float32),
                                torch.arange(k, n)[None], past)
        # a future token changes nothing before it (the reading is causal)
        changed = ids.clone()
        changed[0, -1] = 5
        again = model(changed).logits[0]
    assert full.shape == (n, outputs)
    torch.testing.assert_close(model.head(hidden[0]), full[:k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.head(later[0]), full[k:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again[:-1], full[:-1])


@pytest.fixture(scope="module")
def fitted(encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An extractor fitted for two epochs from the tiny encoder on the written data."""
    root = tmp_path_factory.mktemp("argdec")
    data = write_data(root / "data")
    config = T.FitConfig(size="tiny", epochs=2, minutes=0, packed_batch_size=8,
                         warmup_steps=2, models=("extractor",), init_lr=1e-3,
                         extractor_init=str(encoder))
    report = T.fit(data, root / "ckpt", config, log=lambda _text: None)
    return root / "ckpt", report


def test_fit_starts_the_extractor_from_the_encoder(fitted: tuple[Path, dict]) -> None:
    checkpoint, report = fitted
    folder = checkpoint / "extractor"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertForArgumentDecoding"]
    model = BertForArgumentDecoding.from_pretrained(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tokenizer.token_to_id("<eos>") < model.config.output_tokens
    assert tokenizer.token_to_id("Q0") < model.config.output_tokens
    assert model.config.vocab_size == tokenizer.get_vocab_size(with_added_tokens=True)
    entry = report["models"]["extractor"]
    assert len(entry["epochs"]) == 2 and 0.0 <= entry["best_dev"]["exact_match"] <= 1.0
    assert report["parameters"]["extractor"] == sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def encoder_extractor_checkpoint(tiny_checkpoint: Path, fitted: tuple[Path, dict],
                                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 checkpoint with the fitted encoder extractor in place of its own."""
    out = tmp_path_factory.mktemp("mixed_ext") / "ckpt"
    shutil.copytree(tiny_checkpoint, out)
    shutil.rmtree(out / "extractor")
    shutil.copytree(fitted[0] / "extractor", out / "extractor")
    return out


@pytest.fixture(scope="module")
def encoder_extractor_exports(tmp_path_factory: pytest.TempPathFactory,
                              encoder_extractor_checkpoint: Path):
    """ExportReport of that checkpoint per precision, each exported once."""
    return exports_once(tmp_path_factory, encoder_extractor_checkpoint, "mixed_ext")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_export_and_serve_an_encoder_extractor(encoder_extractor_checkpoint: Path,
                                               encoder_extractor_exports,
                                               precision: str) -> None:
    report = encoder_extractor_exports(precision)
    assert all(row.status == "ok" for row in report.parity), report.table()
    manifest = load_manifest(report.output)
    extractor = manifest.models["extractor"]
    folder = encoder_extractor_checkpoint / "extractor"
    model = BertForArgumentDecoding.from_pretrained(folder).eval()
    assert extractor.architecture == "bert" and extractor.kv_cache is not None
    assert extractor.kv_cache.num_layers == model.config.num_hidden_layers
    assert extractor.kv_cache.num_kv_heads == model.config.num_attention_heads
    assert manifest.models["classifier"].architecture == "qwen2"  # the others unchanged

    # the runtime's cached greedy decode writes what the PyTorch model writes
    solver = Solver.load(report.output, provider="cpu")
    spec: SolverSpec = solver.spec
    prefix, _ = solver.prefix_states("extractor", [QUESTION])
    [[(text, logprob)]] = solver.extract(prefix, [(0, [(0, "3"), (1, "15")], "ADD")], 1)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    from mycelium.runtime.templates import extractor_suffix

    ids = (tokenizer.encode(QUESTION, add_special_tokens=False).ids
           + tokenizer.encode(extractor_suffix(spec.templates, [(0, "3"), (1, "15")], "ADD"),
                              add_special_tokens=False).ids)
    eos = tokenizer.token_to_id("<eos>")
    written, total = [], 0.0
    with torch.no_grad():
        for _ in range(spec.max_new_tokens):
            logits = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)
            token = int(logits.argmax())
            total += float(logits[token])
            if token == eos:
                break
            written.append(token)
            ids.append(token)
    if precision == "fp32":
        assert text == tokenizer.decode(written, skip_special_tokens=True)
        assert np.isclose(logprob, total, atol=1e-3)
    [result] = solver.solve([QUESTION])
    assert result.error is None or "no valid candidate" in result.error


def test_an_extractor_shorter_than_its_inputs_is_refused(encoder_extractor_checkpoint: Path,
                                                        tmp_path: Path) -> None:
    from mycelium.export.checkpoint import validate_checkpoint
    from mycelium.export.errors import CheckpointError

    # below 256 + 64 + 12 tokens
    short = with_positions(encoder_extractor_checkpoint, tmp_path / "short", "extractor", 300)
    with pytest.raises(CheckpointError, match=r"max_position_embeddings 300 is below .*\(332\)"):
        validate_checkpoint(short)


def test_torch_baseline_serves_the_encoder_extractor(encoder_extractor_checkpoint: Path,
                                                     encoder_extractor_exports) -> None:
    """The benchmarks' PyTorch-eager baseline runs the encoder extractor with its cache."""
    from benchmarks.torch_runners import load_torch_solver

    report = encoder_extractor_exports("fp32")
    onnx_solver = Solver.load(report.output, provider="cpu")
    eager = load_torch_solver(encoder_extractor_checkpoint, report.output)
    rows = [(0, [(0, "3"), (1, "15")], "ADD"), (0, [], "MUL"), (1, [(0, "15")], "SUB")]
    got = []
    for solver in (eager, onnx_solver):
        prefix, _ = solver.prefix_states("extractor", [QUESTION, "Hi 15"])
        got.append(solver.extract(prefix, rows, 2))
    assert [[text for text, _ in row] for row in got[0]] == [
        [text for text, _ in row] for row in got[1]]
    np.testing.assert_allclose([[lp for _, lp in row] for row in got[0]],
                               [[lp for _, lp in row] for row in got[1]], atol=1e-3)
