"""The artifacts manifest: the one contract between `mycelium-export` and the runtime.

The exporter builds a :class:`Manifest` and writes it with :func:`write_manifest`;
the runtime reads it with :func:`load_manifest`, which validates the schema,
refuses paths that escape the artifacts folder and (unless told not to) checks
every file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ArtifactsError
from .spec import SolverSpec

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAMES = ("segmenter", "classifier", "extractor")
# the program writer's set: the segmenter finds the quantities, the writer writes the program
WRITER_NAMES = ("segmenter", "writer")
# an encoder classifier reads a right-padded text pair: ids, mask and segment (type) ids
ENCODER_CLASSIFIER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# an encoder classifier reading each problem once: ids and mask (B, T), and which tokens
# belong to each span group (B, G, T)
SPAN_GROUP_INPUTS = ("input_ids", "attention_mask", "group_tokens")
# how a model is served (``runtime.runners``): token labels over a problem (the segmenter),
# a decoder with a KV cache, an encoder reading one text pair per span group, or an
# encoder reading each problem once with all its span groups, or a program writer (a
# decoder with a KV cache whose head scores the equation grammar's characters)
MODEL_KINDS = ("token_classifier", "decoder", "pair_classifier", "span_group_classifier",
               "program_writer")
ROLE_KINDS = {
    "segmenter": ("token_classifier",),
    "classifier": ("decoder", "pair_classifier", "span_group_classifier"),
    "extractor": ("decoder",),
    "writer": ("program_writer",),
}
CACHED_KINDS = ("decoder", "program_writer")  # the kinds with a KV cache


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type and symbolic shape."""

    name: str
    dtype: str  # "int64" | "float32" | "float16"
    shape: tuple[str | int, ...]  # symbolic dims such as ("batch", "seq")


@dataclass(frozen=True)
class KVCacheSpec:
    """Layout of a decoder's KV cache: past_key_values.{i}.key|value (B, KV, P, D)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str


@dataclass(frozen=True)
class ModelSpec:
    """One exported specialist: its graph, tokenizer, I/O and labels."""

    file: str  # ONNX file, relative to the artifacts folder
    sha256: str
    tokenizer: str  # tokenizer.json file, relative
    tokenizer_sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    external_data: dict[str, str] = field(default_factory=dict)  # file -> sha256
    labels: tuple[str, ...] | None = None  # id -> label for classification heads
    kv_cache: KVCacheSpec | None = None  # decoders only
    special_tokens: dict[str, int] = field(default_factory=dict)  # name -> id
    architecture: str = "qwen2"
    kind: str | None = None  # one of MODEL_KINDS; None in manifests written before it

    @property
    def reads_span_groups(self) -> bool:
        """An encoder classifier that reads each problem once with its span groups."""
        return "group_tokens" in {tensor.name for tensor in self.inputs}

    def files(self) -> dict[str, str]:
        """Every file this model needs, mapped to its expected sha256."""
        return {self.file: self.sha256, self.tokenizer: self.tokenizer_sha256, **self.external_data}


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about an artifacts folder."""

    format_version: int
    precision: str  # "fp32" | "fp16" | "int8"
    models: dict[str, ModelSpec]
    # the checkpoint's mycelium.json (templates, grammar, ...), read by SolverSpec.from_dict;
    # a writer changes it through with_mycelium (validated the same way), never in place
    mycelium: dict[str, Any]
    parity: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def writes_programs(self) -> bool:
        """A program writer's set (segmenter and writer), not the span-group specialists."""
        return "writer" in self.models

    def with_mycelium(self, mycelium: dict[str, Any]) -> Manifest:
        """This manifest with another ``mycelium`` section, validated as the runtime loads
        it (:meth:`SolverSpec.from_dict`): raises ArtifactsError before anything is
        written when it would not load."""
        SolverSpec.from_dict(mycelium)
        return replace(self, mycelium=mycelium)

    def to_json(self) -> str:
        """Serialise to the JSON text stored as manifest.json."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def summary(self) -> dict[str, Any]:
        """A short description for `mycelium-rt info`."""
        return {
            "format_version": self.format_version,
            "precision": self.precision,
            "models": {
                name: {
                    "file": spec.file,
                    "architecture": spec.architecture,
                    "tokenizer": spec.tokenizer,
                    "labels": list(spec.labels) if spec.labels else None,
                    "kv_cache": asdict(spec.kv_cache) if spec.kv_cache else None,
                }
                for name, spec in self.models.items()
            },
            "parity": self.parity,
            "versions": self.versions,
        }


def model_kind(role: str, spec: ModelSpec) -> str:
    """How a model is served (one of :data:`MODEL_KINDS`): the manifest's ``kind``, or for
    a manifest written before the field, what its role and graph inputs say."""
    if spec.kind is not None:
        return spec.kind
    if role == "writer":
        return "program_writer"
    if spec.kv_cache is not None:
        return "decoder"
    if role == "segmenter":
        return "token_classifier"
    return "span_group_classifier" if spec.reads_span_groups else "pair_classifier"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write manifest.json into the artifacts folder and return its path."""
    path = Path(folder) / MANIFEST_NAME
    path.write_text(manifest.to_json() + "\n", encoding="utf-8")
    return path


def _require(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ArtifactsError(f"manifest: missing field '{key}' in {where}")
    value = obj[key]
    if not isinstance(value, kind):
        raise ArtifactsError(f"manifest: field '{key}' in {where} has the wrong type")
    return value


def _tensor_specs(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ArtifactsError(f"manifest: {where} must be a non-empty list")
    specs = []
    for item in raw:
        name = _require(item, "name", str, where)
        dtype = _require(item, "dtype", str, where)
        shape = _require(item, "shape", list, where)
        specs.append(TensorSpec(name=name, dtype=dtype, shape=tuple(shape)))
    return tuple(specs)


def _model_spec(name: str, raw: Any) -> ModelSpec:
    where = f"models.{name}"
    kv = raw.get("kv_cache") if isinstance(raw, dict) else None
    kv_spec = None
    if kv is not None:
        kv_spec = KVCacheSpec(
            num_layers=_require(kv, "num_layers", int, where + ".kv_cache"),
            num_kv_heads=_require(kv, "num_kv_heads", int, where + ".kv_cache"),
            head_dim=_require(kv, "head_dim", int, where + ".kv_cache"),
            dtype=_require(kv, "dtype", str, where + ".kv_cache"),
        )
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if labels is not None and not (
        isinstance(labels, list) and all(isinstance(x, str) for x in labels)
    ):
        raise ArtifactsError(f"manifest: {where}.labels must be a list of strings")
    external = raw.get("external_data", {}) if isinstance(raw, dict) else {}
    if not isinstance(external, dict):
        raise ArtifactsError(f"manifest: {where}.external_data must be an object")
    special = raw.get("special_tokens", {}) if isinstance(raw, dict) else {}
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind is not None and kind not in ROLE_KINDS.get(name, MODEL_KINDS):
        raise ArtifactsError(f"manifest: {where}.kind {kind!r} is not one of "
                             f"{', '.join(ROLE_KINDS.get(name, MODEL_KINDS))}")
    if kind is not None and (kind in CACHED_KINDS) != (kv is not None):
        raise ArtifactsError(f"manifest: {where}.kind {kind!r} and its kv_cache disagree "
                             "(a decoder and a program writer have one, no other kind does)")
    return ModelSpec(
        file=_require(raw, "file", str, where),
        sha256=_require(raw, "sha256", str, where),
        tokenizer=_require(raw, "tokenizer", str, where),
        tokenizer_sha256=_require(raw, "tokenizer_sha256", str, where),
        inputs=_tensor_specs(_require(raw, "inputs", list, where), where + ".inputs"),
        outputs=_tensor_specs(_require(raw, "outputs", list, where), where + ".outputs"),
        external_data={str(k): str(v) for k, v in external.items()},
        labels=tuple(labels) if labels is not None else None,
        kv_cache=kv_spec,
        special_tokens={str(k): int(v) for k, v in special.items()},
        architecture=str(raw.get("architecture", "qwen2")),
        kind=kind,
    )


def safe_member(folder: Path, relative: str) -> Path:
    """Resolve a file name from the manifest inside the folder, refusing escapes.

    Absolute paths, `..` components and symlinks that point outside the folder
    are refused with an :class:`ArtifactsError` naming the file.
    """
    if not relative or os.path.isabs(relative) or "\\" in relative:
        raise ArtifactsError(f"artifacts: refused file name {relative!r} (absolute or empty)")
    if any(part in ("..", "") for part in Path(relative).parts) or ".." in relative.split("/"):
        raise ArtifactsError(f"artifacts: refused file name {relative!r} (escapes the folder)")
    root = Path(folder).resolve()
    target = (root / relative).resolve()
    if root != target and root not in target.parents:
        raise ArtifactsError(f"artifacts: refused file {relative!r} (points outside the folder)")
    return target


def parse_manifest(data: Any) -> Manifest:
    """Validate the decoded manifest.json and build a :class:`Manifest`."""
    version = _require(data, "format_version", int, "manifest")
    if version != FORMAT_VERSION:
        raise ArtifactsError(
            f"manifest: format_version {version} is not supported (expected {FORMAT_VERSION})"
        )
    precision = _require(data, "precision", str, "manifest")
    if precision not in ("fp32", "fp16", "int8"):
        raise ArtifactsError(f"manifest: unknown precision {precision!r}")
    raw_models = _require(data, "models", dict, "manifest")
    if "writer" in raw_models:
        models = _writer_models(raw_models)
    else:
        models = _span_models(raw_models)
    return Manifest(
        format_version=version,
        precision=precision,
        models=models,
        mycelium=_require(data, "mycelium", dict, "manifest"),
        parity=data.get("parity", {}) if isinstance(data.get("parity", {}), dict) else {},
        versions=data.get("versions", {}) if isinstance(data.get("versions", {}), dict) else {},
    )


def _writer_models(raw_models: dict[str, Any]) -> dict[str, ModelSpec]:
    """A program writer's set: exactly a segmenter and a writer (a KV-cache decoder whose
    labels are the grammar's characters and the end of the program, with its ``eos``)."""
    if set(raw_models) != set(WRITER_NAMES):
        raise ArtifactsError("manifest: a program writer's set holds exactly the models "
                             f"{', '.join(WRITER_NAMES)}, got {', '.join(sorted(raw_models))}")
    models = {name: _model_spec(name, raw_models[name]) for name in WRITER_NAMES}
    writer = models["writer"]
    if writer.kv_cache is None:
        raise ArtifactsError("manifest: models.writer.kv_cache is required")
    if not writer.labels or len(writer.labels) < 2:
        raise ArtifactsError("manifest: models.writer.labels must list the grammar's "
                             "characters and the end of the program")
    if "eos" not in writer.special_tokens:
        raise ArtifactsError("manifest: models.writer.special_tokens needs 'eos'")
    if not models["segmenter"].labels:
        raise ArtifactsError("manifest: models.segmenter.labels is required")
    return models


def _span_models(raw_models: dict[str, Any]) -> dict[str, ModelSpec]:
    """The span-group specialists: segmenter, classifier, extractor."""
    missing = [name for name in MODEL_NAMES if name not in raw_models]
    if missing:
        raise ArtifactsError(f"manifest: missing model(s) {', '.join(missing)}")
    models = {name: _model_spec(name, raw_models[name]) for name in MODEL_NAMES}
    if models["extractor"].kv_cache is None:
        raise ArtifactsError("manifest: models.extractor.kv_cache is required")
    inputs = ", ".join(spec.name for spec in models["classifier"].inputs)
    encoder_inputs = ", ".join(ENCODER_CLASSIFIER_INPUTS)
    span_group_inputs = ", ".join(SPAN_GROUP_INPUTS)
    if models["classifier"].kv_cache is None and inputs not in (encoder_inputs,
                                                                span_group_inputs):
        raise ArtifactsError(
            "manifest: models.classifier needs a kv_cache (a decoder) or the inputs "
            f"{encoder_inputs} or {span_group_inputs} (an encoder), got {inputs}"
        )
    for name in ("segmenter", "classifier"):
        if not models[name].labels:
            raise ArtifactsError(f"manifest: models.{name}.labels is required")
    return models


def load_manifest(folder: str | os.PathLike[str], *, verify: bool = True) -> Manifest:
    """Read, validate and (with ``verify``) hash-check an artifacts folder."""
    root = Path(folder)
    if not root.is_dir():
        raise ArtifactsError(f"artifacts: folder not found: {root}")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactsError(f"artifacts: no {MANIFEST_NAME} in {root}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactsError(f"artifacts: {path} is not valid JSON ({exc})") from None
    manifest = parse_manifest(data)
    for spec in manifest.models.values():
        for relative, expected in spec.files().items():
            target = safe_member(root, relative)
            if not target.is_file():
                raise ArtifactsError(f"artifacts: file {relative!r} is missing")
            if verify and sha256_file(target) != expected:
                raise ArtifactsError(f"artifacts: sha256 mismatch for {relative!r}")
    return manifest
