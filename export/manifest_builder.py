"""Build the artifacts manifest (mycelium.runtime.manifest) from what the export wrote."""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from mycelium.runtime.manifest import (
    FORMAT_VERSION,
    KVCacheSpec,
    Manifest,
    ModelSpec,
    model_kind,
    sha256_file,
)

from .checkpoint import Checkpoint, ModelCheckpoint
from .io_specs import GraphIO
from .verify import ParityRow

LIBRARIES = ("mycelium", "torch", "transformers", "onnx", "onnxruntime", "tokenizers")


def versions(opset: int) -> dict[str, str]:
    """Exporter and library versions, and the ONNX opset."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    found["onnx_opset"] = str(opset)
    return found


def model_spec(folder: Path, model: ModelCheckpoint, io: GraphIO, files: list[str],
               tokenizer: str, kv: KVCacheSpec | None) -> ModelSpec:
    """The manifest entry of one exported model (its runner kind written out); hashes the
    files in ``folder``."""
    graph, *data = files
    spec = ModelSpec(
        file=graph,
        sha256=sha256_file(folder / graph),
        tokenizer=tokenizer,
        tokenizer_sha256=sha256_file(folder / tokenizer),
        inputs=io.inputs,
        outputs=io.outputs,
        external_data={name: sha256_file(folder / name) for name in data},
        labels=model.labels,
        kv_cache=kv,
        special_tokens=dict(model.special_tokens),
        architecture=model.architecture.model_type,
    )
    return replace(spec, kind=model_kind(model.name, spec))


def build_manifest(checkpoint: Checkpoint, precision: str, specs: dict[str, ModelSpec],
                   rows: list[ParityRow], opset: int) -> Manifest:
    """The whole manifest: models, mycelium.json verbatim, parity figures, versions."""
    parity: dict[str, Any] = {row.model: row.to_dict() for row in rows}
    return Manifest(
        format_version=FORMAT_VERSION,
        precision=precision,
        models=specs,
        mycelium=checkpoint.spec_dict,
        parity=parity,
        versions=versions(opset),
    )
