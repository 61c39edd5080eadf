"""Artifacts are verified before use: no file may escape the artifacts folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mycelium.runtime.cli import main
from mycelium.runtime.errors import ArtifactsError
from mycelium.runtime.manifest import load_manifest, safe_member, sha256_file
from mycelium.runtime.sessions import make_session

onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.onnx", "a/../../x", "", "a\\b"])
def test_safe_member_refuses_escapes(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArtifactsError, match="refused"):
        safe_member(tmp_path, name)


def test_symlink_pointing_out_is_refused(fp32_export, tmp_path: Path) -> None:
    copy = tmp_path / "art"
    shutil.copytree(fp32_export.output, copy)
    outside = tmp_path / "outside.json"
    shutil.copy(copy / "segmenter.tokenizer.json", outside)
    (copy / "segmenter.tokenizer.json").unlink()
    (copy / "segmenter.tokenizer.json").symlink_to(outside)
    with pytest.raises(ArtifactsError, match="points outside"):
        load_manifest(copy)


def test_external_data_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    secret = tmp_path / "secret.bin"
    np.arange(4, dtype=np.float32).tofile(secret)
    folder = tmp_path / "art"
    folder.mkdir()
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ArtifactsError, match="cannot load model.onnx.*escapes model directory"):
        make_session(path, "cpu")


def test_manifest_schema_errors_are_one_line(fp32_export, tmp_path: Path) -> None:
    cases = {
        "format_version": lambda m: m.update(format_version=99),
        "models": lambda m: m["models"].pop("extractor"),
        "labels": lambda m: m["models"]["classifier"].pop("labels"),
        "kv_cache": lambda m: m["models"]["extractor"].pop("kv_cache"),
        "precision": lambda m: m.update(precision="int3"),
    }
    for expected, mutate in cases.items():
        copy = tmp_path / expected
        shutil.copytree(fp32_export.output, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        mutate(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        result = CliRunner().invoke(main, ["info", "--artifacts", str(copy)])
        assert result.exit_code != 0, expected
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_not_json_manifest(fp32_export, tmp_path: Path) -> None:
    copy = tmp_path / "art"
    shutil.copytree(fp32_export.output, copy)
    (copy / "manifest.json").write_text("{")
    with pytest.raises(ArtifactsError, match="not valid JSON"):
        load_manifest(copy)


def test_hashes_recorded_match_files(fp32_export) -> None:
    manifest = load_manifest(fp32_export.output)
    for spec in manifest.models.values():
        for name, digest in spec.files().items():
            assert sha256_file(Path(fp32_export.output) / name) == digest
