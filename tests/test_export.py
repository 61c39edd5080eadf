"""mycelium-export on tiny random checkpoints: graphs, parity, manifest, refusals."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the `export` extra
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

from mycelium.export import export_checkpoint  # noqa: E402
from mycelium.export.checkpoint import load_model, validate_checkpoint  # noqa: E402
from mycelium.export.cli import main  # noqa: E402
from mycelium.export.registry import ARCHITECTURES, ROLES  # noqa: E402
from mycelium.export.verify import TOLERANCES, Tolerance  # noqa: E402
from mycelium.runtime.manifest import load_manifest, sha256_file  # noqa: E402

# every registered architecture must be exported by a test (bert: test_encoder_specialists.py)
TESTED_ARCHITECTURES = {"qwen2", "bert"}


def quiet(_text: str) -> None:
    """Progress sink for API calls in tests."""


def pad(rows: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids (pad 0) and mask."""
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


ROWS = [[40, 41, 42, 43, 44, 45, 46], [50, 51, 52], [60]]


# --- registry ---------------------------------------------------------------------------------

def test_every_registered_architecture_is_tested() -> None:
    assert set(ARCHITECTURES) == TESTED_ARCHITECTURES
    assert set(ARCHITECTURES["qwen2"].classes) == set(ROLES)  # the decoders serve every role
    # an encoder serves the segmenter and the classifier as full-sequence graphs (it cannot
    # write: no extractor); a decoder caches the decoder roles
    assert set(ARCHITECTURES["bert"].classes) == {"segmenter", "classifier"}
    assert [ARCHITECTURES["bert"].cached(r) for r in ROLES] == [False, False, False]
    assert [ARCHITECTURES["qwen2"].cached(r) for r in ROLES] == [False, True, True]


# --- wrappers against Hugging Face, in PyTorch --------------------------------------------------

def test_wrappers_match_hf_in_torch(tiny_checkpoint: Path) -> None:
    ckpt = validate_checkpoint(tiny_checkpoint)
    for name, model in ckpt.models.items():
        hf = load_model(model)
        graph = model.architecture.build_graph(name, hf)
        right_ids, right_mask = pad(ROWS, left=False)
        with torch.no_grad():
            ref = hf(input_ids=right_ids, attention_mask=right_mask).logits
            if name == "segmenter":
                ours = graph(right_ids, right_mask)
                real = right_mask.bool()
                assert torch.allclose(ours[real], ref[real], atol=1e-5)
                continue
            ids, mask = pad(ROWS, left=True)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            layers, kv_heads, head_dim = model.architecture.kv_layout(hf.config)
            past = [torch.zeros(len(ROWS), kv_heads, 0, head_dim)] * (2 * layers)
            logits, *present = graph(ids, mask, positions, *past)
        if name == "extractor":
            ref = ref[torch.arange(len(ROWS)), right_mask.sum(1) - 1]
        assert torch.allclose(logits, ref, atol=1e-5)  # left padding + last position == HF
        assert present[0].shape == (len(ROWS), kv_heads, ids.shape[1], head_dim)


# --- exports and parity -------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["fp32_export", "int8_export"])
def test_parity_within_tolerance(fixture: str, request: pytest.FixtureRequest) -> None:
    report = request.getfixturevalue(fixture)
    assert [row.model for row in report.parity] == list(ROLES)
    for row in report.parity:
        assert row.status == "ok", row
        assert row.max_abs_diff is not None and row.max_abs_diff <= row.tolerance
        assert row.provider == "CPUExecutionProvider"
    if report.precision == "fp32":
        assert max(row.max_abs_diff for row in report.parity) <= TOLERANCES["fp32"].atol
        assert all(row.argmax_match for row in report.parity)
    assert "max|Δlogits|" in report.table()


def test_int8_graph_is_quantized(int8_export) -> None:
    manifest = load_manifest(int8_export.output)
    assert manifest.precision == "int8"
    graph = onnx.load(str(int8_export.output / "extractor.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert manifest.models["extractor"].kv_cache.dtype == "float32"


def test_fp16_exports(tiny_checkpoint: Path, tmp_path: Path) -> None:
    report = export_checkpoint(tiny_checkpoint, tmp_path / "art", precision="fp16", log=quiet)
    manifest = load_manifest(report.output)
    assert manifest.precision == "fp16"
    for row in report.parity:  # verified where a provider runs fp16, else marked so
        assert row.status in ("ok", "unverified"), row
        assert manifest.parity[row.model]["status"] == row.status
    extractor = manifest.models["extractor"]
    assert extractor.kv_cache.dtype == "float16"
    assert extractor.outputs[0].dtype == "float16"


def test_manifest_contents(fp32_export, tiny_checkpoint: Path) -> None:
    out = fp32_export.output
    manifest = load_manifest(out)  # schema + every sha256
    assert manifest.precision == "fp32"
    assert manifest.mycelium == json.loads((tiny_checkpoint / "mycelium.json").read_text())
    assert {"mycelium", "torch", "transformers", "onnx", "onnxruntime"} <= set(manifest.versions)
    seg, cls, ext = (manifest.models[name] for name in ROLES)
    assert seg.labels == ("O", "B-QTY", "I-QTY", "B-UNUSED", "I-UNUSED")
    assert cls.labels == ("ADD", "SUB", "MUL", "DIV")
    assert ext.labels is None and seg.kv_cache is None
    assert [t.name for t in seg.inputs] == ["input_ids", "attention_mask"]
    assert seg.outputs[0].shape == ("batch", "seq", 5)
    past = [f"past_key_values.{i}.{p}" for i in range(2) for p in ("key", "value")]
    present = [f"present.{i}.{p}" for i in range(2) for p in ("key", "value")]
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tiny_checkpoint / "extractor" / "tokenizer.json")
                                ).get_vocab_size(with_added_tokens=True)
    for spec, width in ((cls, 4), (ext, vocab)):
        assert [t.name for t in spec.inputs] == ["input_ids", "attention_mask", "position_ids",
                                                 *past]
        assert [t.name for t in spec.outputs] == ["logits", *present]
        assert spec.outputs[0].shape == ("batch", width)
        assert spec.inputs[3].shape == ("batch", 2, "past_seq", 16)
        assert spec.outputs[1].shape == ("batch", 2, "total_seq", 16)
        kv = spec.kv_cache
        assert (kv.num_layers, kv.num_kv_heads, kv.head_dim, kv.dtype) == (2, 2, 16, "float32")
    for name, spec in manifest.models.items():
        assert spec.file == f"{name}.onnx" and spec.tokenizer == f"{name}.tokenizer.json"
        assert spec.architecture == "qwen2"
        for relative, digest in spec.files().items():
            assert sha256_file(out / relative) == digest
        session = ort.InferenceSession(str(out / spec.file), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == [t.name for t in spec.inputs]
        assert [o.name for o in session.get_outputs()] == [t.name for t in spec.outputs]
        tokenizer = Tokenizer.from_file(str(out / spec.tokenizer))
        assert spec.special_tokens["pad"] == tokenizer.token_to_id("<pad>")
    assert ext.special_tokens.keys() >= {"pad", "eos", "sep", "op", "args"}
    assert {row["status"] for row in manifest.parity.values()} == {"ok"}


def test_extractor_decodes_from_empty_past(fp32_export, tiny_checkpoint: Path) -> None:
    """Prefill with P = 0 (left padding), then greedy steps with P > 0, against Hugging Face."""
    out = fp32_export.output
    spec = load_manifest(out).models["extractor"]
    session = ort.InferenceSession(str(out / spec.file), providers=["CPUExecutionProvider"])
    hf = load_model(validate_checkpoint(tiny_checkpoint).models["extractor"])
    kv = spec.kv_cache
    past_names = [t.name for t in spec.inputs[3:]]
    ids, mask = (x.numpy() for x in pad(ROWS, left=True))
    past = [np.zeros((len(ROWS), kv.num_kv_heads, 0, kv.head_dim), np.float32)] * len(past_names)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    rows = [list(r) for r in ROWS]
    for step in range(4):
        feed = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                **dict(zip(past_names, past, strict=True))}
        logits, *past = session.run(None, feed)
        assert past[0].shape == (len(ROWS), kv.num_kv_heads, mask.shape[1], kv.head_dim)
        with torch.no_grad():
            ref = torch.stack([hf(input_ids=torch.tensor([r])).logits[0, -1] for r in rows])
        np.testing.assert_allclose(logits, ref.numpy(), atol=1e-4, err_msg=f"step {step}")
        tokens = logits.argmax(-1)
        rows = [r + [int(t)] for r, t in zip(rows, tokens, strict=True)]
        ids = tokens[:, None].astype(np.int64)
        positions = mask.sum(1, keepdims=True)
        mask = np.concatenate([mask, np.ones_like(ids)], axis=1)


def test_external_data_when_large(tiny_checkpoint: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mycelium.export.onnx_export.EXTERNAL_DATA_BYTES", 0)
    report = export_checkpoint(tiny_checkpoint, tmp_path / "art", log=quiet)
    manifest = load_manifest(report.output)
    for name, spec in manifest.models.items():
        assert list(spec.external_data) == [f"{name}.onnx.data"]
    assert {row.status for row in report.parity} == {"ok"}  # onnxruntime read the data files


def test_checkpoint_writer(tiny_checkpoint: Path) -> None:
    for name in ROLES:
        config = json.loads((tiny_checkpoint / name / "config.json").read_text())
        assert config["model_type"] == "qwen2" and config["hidden_size"] == 64
        assert 400 <= config["vocab_size"] <= 600
        assert (tiny_checkpoint / name / "model.safetensors").is_file()
    classifier = json.loads((tiny_checkpoint / "classifier" / "config.json").read_text())
    assert classifier["id2label"] == {"0": "ADD", "1": "SUB", "2": "MUL", "3": "DIV"}
    assert classifier["pad_token_id"] is not None


# --- command line -------------------------------------------------------------------------------

def run_cli(*args: str):
    """Invoke mycelium-export in-process."""
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    """The single `Error:` line of a failed run (no traceback)."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(flag: str) -> None:
    result = run_cli(flag)
    assert result.exit_code == 0
    assert "CHECKPOINT" in result.output and "--precision" in result.output
    assert "writer RUN" in result.output  # the program writer's artifacts set


def _edit_config(relative: str, **changes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / relative / "config.json"
        config = json.loads(path.read_text())
        config.update(changes)
        path.write_text(json.dumps(config))

    return edit


def _remove(relative: str) -> Callable[[Path], None]:
    def remove(root: Path) -> None:
        target = root / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return remove


def _pickle_only(root: Path) -> None:
    (root / "segmenter" / "model.safetensors").unlink()
    (root / "segmenter" / "pytorch_model.bin").write_bytes(b"\x80\x04N.")


def _bert_extractor(root: Path) -> None:
    from transformers import BertConfig

    shutil.rmtree(root / "extractor")
    BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=37).save_pretrained(root / "extractor")


def _bad_spec(root: Path) -> None:
    (root / "mycelium.json").write_text(json.dumps({"format_version": 99}))


BAD_CHECKPOINTS = [
    ("missing-subfolder", _remove("extractor"), r"missing sub-folder extractor/"),
    ("missing-config", _remove("segmenter/config.json"), r"segmenter: missing config\.json"),
    ("missing-tokenizer", _remove("classifier/tokenizer.json"),
     r"classifier: missing tokenizer\.json"),
    ("missing-spec", _remove("mycelium.json"), r"missing mycelium\.json"),
    ("invalid-spec", _bad_spec, r"invalid mycelium\.json: unsupported format_version 99"),
    ("pickle-only", _pickle_only, r"segmenter: refusing pickle weights pytorch_model\.bin"),
    ("default-labels", _edit_config("classifier", id2label={"0": "LABEL_0", "1": "LABEL_1"}),
     r"classifier: config\.json has no label map"),
    ("no-labels", _edit_config("segmenter", id2label=None), r"segmenter: .*no id2label"),
    ("bert", _bert_extractor,  # an encoder cannot write
     r"extractor: architecture 'bert' cannot serve the extractor \(it serves: segmenter, "
     r"classifier\)"),
    ("llama", _edit_config("extractor", model_type="llama", architectures=["LlamaForCausalLM"]),
     r"unsupported architecture 'llama' for extractor"),
    ("wrong-head", _edit_config("segmenter", architectures=["Qwen2ForCausalLM"]),
     r"segmenter: .*is not Qwen2ForTokenClassification"),
]


@pytest.mark.parametrize("mutate, pattern", [case[1:] for case in BAD_CHECKPOINTS],
                         ids=[case[0] for case in BAD_CHECKPOINTS])
def test_bad_checkpoint_is_refused(mutate: Callable[[Path], None], pattern: str,
                                   tiny_checkpoint: Path, tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, root)
    mutate(root)
    line = error_line(run_cli(root, "-o", tmp_path / "art"))
    assert re.search(pattern, line), line
    assert not (tmp_path / "art").exists()


def test_missing_checkpoint_folder(tmp_path: Path) -> None:
    line = error_line(run_cli(tmp_path / "nope", "-o", tmp_path / "art"))
    assert "checkpoint: folder not found" in line


def test_existing_output_needs_force(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "art"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    assert "exists (use --force" in error_line(run_cli(tiny_checkpoint, "-o", out))
    (out / "notes.txt").write_text("mine")
    line = error_line(run_cli(tiny_checkpoint, "-o", out, "--force"))
    assert "not artifacts (notes.txt)" in line
    assert (out / "notes.txt").is_file()


def test_force_replaces_artifacts(fp32_export, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "art"
    shutil.copytree(fp32_export.output, out)
    result = run_cli(tiny_checkpoint, "-o", out, "--force", "--no-verify", "--opset", "18")
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert manifest.versions["onnx_opset"] == "18"
    assert {row["status"] for row in manifest.parity.values()} == {"skipped"}


def test_bad_options(tiny_checkpoint: Path, tmp_path: Path) -> None:
    line = error_line(run_cli(tiny_checkpoint, "-o", tmp_path / "art", "--opset", "16"))
    assert "opset 16 is not supported" in line


def test_parity_failures_are_collected(tiny_checkpoint: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOLERANCES, "fp32", Tolerance(atol=-1.0, rtol=0.0, argmax=True))
    result = run_cli(tiny_checkpoint, "-o", tmp_path / "art")
    line = error_line(result)
    assert line.startswith("Error: parity check failed:")
    for name in ROLES:
        assert f"{name} (fp32): max |Δlogits|" in line
    assert "status" in result.output  # the table went to stderr
    assert not (tmp_path / "art").exists()  # nothing published
    assert not list(tmp_path.glob(".art.*"))  # staging and scratch removed


# --- --reuse: re-export one specialist, take the others from artifacts -----------------------

def test_reuse_takes_the_missing_models(fp32_export, tiny_checkpoint: Path,
                                        tmp_path: Path) -> None:
    partial = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, partial)
    shutil.rmtree(partial / "segmenter")
    shutil.rmtree(partial / "extractor")
    out = tmp_path / "art"
    result = run_cli(partial, "-o", out, "--reuse", fp32_export.output)
    assert result.exit_code == 0, result.output
    manifest, before = load_manifest(out), fp32_export.manifest
    for role in ("segmenter", "extractor"):  # copied byte for byte, parity row noted
        assert manifest.models[role] == before.models[role]
        assert (out / f"{role}.onnx").read_bytes() == (
            fp32_export.output / f"{role}.onnx").read_bytes()
        assert manifest.parity[role]["note"] == f"reused from {fp32_export.output}"
        assert manifest.parity[role]["status"] == before.parity[role]["status"]
    assert manifest.parity["classifier"]["status"] == "ok"  # exported and verified here
    assert "note" not in manifest.parity["classifier"]
    assert "copying segmenter from" in result.output
    shipped, first = tmp_path / "shipped", tmp_path / "first"  # as a default is shipped:
    shutil.copytree(fp32_export.output, shipped)  # exported reusing the default folder,
    assert run_cli(partial, "-o", first, "--reuse", shipped).exit_code == 0
    shutil.rmtree(shipped)
    shutil.copytree(first, shipped)  # then copied into it
    for source, target in ((shipped, tmp_path / "again"), (first, tmp_path / "chained")):
        assert run_cli(partial, "-o", target, "--reuse", source).exit_code == 0
    notes = {name: load_manifest(tmp_path / name).parity["segmenter"]["note"]
             for name in ("again", "chained")}
    assert notes["again"] == f"reused from {shipped}"  # the same link once, not twice
    assert notes["chained"] == f"reused from {shipped}; reused from {first}"


@pytest.mark.parametrize("setup, pattern", [
    ("no_reuse", "checkpoint: missing sub-folder classifier/ in"),
    ("empty", "no model sub-folder (segmenter, classifier, extractor)"),
    ("precision", "its models are fp32, this export is int8 (pass --precision fp32)"),
    ("not_artifacts", "artifacts: no manifest.json in"),
    ("label", "classifier label 'ADD' is not in the checkpoint's mycelium.json"),
    ("token", "the classifier was exported with another 'sep' token than the checkpoint's"),
])
def test_reuse_refusals(setup: str, pattern: str, fp32_export, tiny_checkpoint: Path,
                        tmp_path: Path) -> None:
    partial = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, partial)
    shutil.rmtree(partial / "classifier")
    args = ["--reuse", str(fp32_export.output)]
    if setup == "no_reuse":
        args = []
    elif setup == "empty":
        shutil.rmtree(partial / "segmenter")
        shutil.rmtree(partial / "extractor")
    elif setup == "precision":
        args += ["--precision", "int8"]
    elif setup == "not_artifacts":
        args = ["--reuse", str(tmp_path)]
    elif setup == "label":  # the checkpoint's operations no longer include the reused labels
        spec = json.loads((partial / "mycelium.json").read_text())
        labels = fp32_export.manifest.models["classifier"].labels
        spec["operations"] = [op for op in spec["operations"] if op != "ADD"]
        assert "ADD" in labels
        (partial / "mycelium.json").write_text(json.dumps(spec))
    elif setup == "token":  # mycelium.json now names another token as the separator
        spec = json.loads((partial / "mycelium.json").read_text())
        spec["special_tokens"]["sep"] = spec["special_tokens"]["pad"]
        (partial / "mycelium.json").write_text(json.dumps(spec))
    line = error_line(run_cli(partial, "-o", tmp_path / "art", *args))
    assert pattern in line, line
    assert not (tmp_path / "art").exists()
