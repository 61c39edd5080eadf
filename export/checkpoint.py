"""Validate a checkpoint folder against the contract, then load its models.

Validation reads only JSON files and tokenizers (no weights), so a bad
checkpoint fails in well under a second with a one-line
:class:`~mycelium.export.errors.CheckpointError` naming the problem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycelium.runtime.errors import ArtifactsError
from mycelium.runtime.spec import REJECT, SolverSpec

from .errors import CheckpointError
from .registry import ARCHITECTURES, ROLES, SPAN_GROUP_CLASS, Architecture, Role, supported

SPEC_NAME = "mycelium.json"
SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")
_DEFAULT_LABEL = re.compile(r"LABEL_\d+")
# Special tokens (mycelium.json names) each role's inputs use when a decoder serves it;
# an encoder needs only "pad" (its own post-processor adds its special tokens). All are
# recorded when present.
REQUIRED_TOKENS = {
    "segmenter": ("pad",),
    "classifier": ("pad", "sep", "cls"),
    "extractor": ("pad", "eos", "sep", "op", "args"),
}


@dataclass(frozen=True)
class ModelCheckpoint:
    """One validated sub-folder of the checkpoint."""

    role: Role
    folder: Path
    config: dict[str, Any]  # config.json as read
    architecture: Architecture
    labels: tuple[str, ...] | None  # id -> label, classification heads only
    tokenizer: Path
    special_tokens: dict[str, int]  # mycelium.json name -> token id
    class_name: str  # the model class config.json declares (one the role accepts)

    @property
    def name(self) -> str:
        """The role name (segmenter, classifier, extractor)."""
        return self.role.name

    @property
    def span_groups(self) -> bool:
        """A classifier that reads each problem once and pools every span group."""
        return self.class_name == SPAN_GROUP_CLASS


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint: mycelium.json and its models (all three unless validated
    with ``optional``)."""

    root: Path
    spec: SolverSpec
    spec_dict: dict[str, Any]  # mycelium.json verbatim, copied into the manifest
    models: dict[str, ModelCheckpoint]


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{what}: {path} is not valid JSON ({exc})") from None


def _read_spec(root: Path) -> tuple[SolverSpec, dict[str, Any]]:
    path = root / SPEC_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint: missing {SPEC_NAME} in {root}")
    data = _read_json(path, "checkpoint")
    try:
        return SolverSpec.from_dict(data), data
    except ArtifactsError as exc:
        raise CheckpointError(f"checkpoint: invalid {exc}") from None


def _check_weights(role: str, folder: Path) -> None:
    if any((folder / name).is_file() for name in SAFETENSORS):
        return
    pickles = [name for name in PICKLES if (folder / name).is_file()]
    pickles += sorted(p.name for p in folder.glob("*.bin") if p.name not in pickles)
    if pickles:
        raise CheckpointError(
            f"{role}: refusing pickle weights {pickles[0]} in {folder} "
            "(save the model with safetensors: save_pretrained(safe_serialization=True))"
        )
    raise CheckpointError(f"{role}: no model.safetensors in {folder}")


def allowed_labels(role: str, spec: SolverSpec) -> tuple[str, ...]:
    """The labels mycelium.json lets a role's head have (segmenter tags, or the operations
    and the reject label)."""
    return tuple(spec.segmenter_labels) if role == "segmenter" else (*spec.operations, REJECT)


def _labels(role: str, config: dict[str, Any], spec: SolverSpec) -> tuple[str, ...]:
    raw = config.get("id2label")
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(f"{role}: config.json has no id2label label map")
    try:
        by_id = {int(key): str(value) for key, value in raw.items()}
    except (TypeError, ValueError):
        raise CheckpointError(f"{role}: id2label keys must be integers") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(f"{role}: id2label ids {sorted(by_id)} are not 0..{len(by_id) - 1}")
    labels = tuple(by_id[i] for i in range(len(by_id)))
    if all(_DEFAULT_LABEL.fullmatch(label) for label in labels):
        raise CheckpointError(
            f"{role}: config.json has no label map (id2label is the default {labels[0]}...)"
        )
    allowed = allowed_labels(role, spec)
    unknown = [label for label in labels if label not in allowed]
    if unknown:
        raise CheckpointError(
            f"{role}: label {unknown[0]!r} is not in mycelium.json ({', '.join(allowed)})"
        )
    return labels


def _special_tokens(role: str, path: Path, spec: SolverSpec, vocab_size: int,
                    config_pad: int | None = None,
                    required: tuple[str, ...] = ()) -> dict[str, int]:
    """Ids of mycelium.json's special tokens in this model's tokenizer (``required``: those
    the role's inputs use). A model with its own tokenizer (a pretrained encoder's) pads
    with the id its config names."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad files
        raise CheckpointError(f"{role}: cannot read {path} ({exc})") from None
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise CheckpointError(
            f"{role}: tokenizer has {size} tokens but the model's vocab_size is {vocab_size}"
        )
    ids = {}
    for name, token in spec.special_tokens.items():
        token_id = tokenizer.token_to_id(token)
        if token_id is None and name == "pad" and config_pad is not None and (
            0 <= config_pad < size
        ):
            token_id = config_pad
        if token_id is not None:
            ids[name] = token_id
        elif name in required:
            raise CheckpointError(f"{role}: tokenizer.json has no special token {token!r} ({name})")
    return ids


def _check_positions(role: str, positions: Any, path: Path, spec: SolverSpec,
                     span_groups: bool = False) -> None:
    """An encoder's learned absolute positions must cover its longest input: the problem
    (segmenter), the problem framed by its special tokens (a ``span_groups`` classifier),
    or the problem, the group and the special tokens of a pair (a pair classifier), which
    its tokenizer's post-processor must then add."""
    from tokenizers import Tokenizer

    longest, what = spec.max_problem_tokens, "max_problem_tokens"
    if span_groups:
        special = Tokenizer.from_file(str(path)).num_special_tokens_to_add(is_pair=False)
        longest += special
        what = f"max_problem_tokens + {special} special tokens"
    elif role == "classifier":
        special = Tokenizer.from_file(str(path)).num_special_tokens_to_add(is_pair=True)
        if special == 0:
            raise CheckpointError(
                "classifier: tokenizer.json has no post-processor joining a text pair "
                "(an encoder classifier reads the problem and the group as two segments)"
            )
        longest += spec.max_suffix_tokens + special
        what = f"max_problem_tokens + max_suffix_tokens + {special} special tokens"
    if isinstance(positions, int) and positions < longest:
        raise CheckpointError(
            f"{role}: max_position_embeddings {positions} is below mycelium.json's "
            f"{what} ({longest})"
        )


def _check_decoding_positions(role: str, positions: Any, spec: SolverSpec) -> None:
    """Learned absolute positions of a cached graph must cover the problem, the suffix and
    every generated token."""
    longest = spec.max_problem_tokens + spec.max_suffix_tokens + spec.max_new_tokens
    if isinstance(positions, int) and positions < longest:
        raise CheckpointError(
            f"{role}: max_position_embeddings {positions} is below mycelium.json's "
            f"max_problem_tokens + max_suffix_tokens + max_new_tokens ({longest})"
        )


def _validate_model(root: Path, role: Role, spec: SolverSpec) -> ModelCheckpoint:
    folder = root / role.name
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint: missing sub-folder {role.name}/ in {root}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{role.name}: missing config.json in {folder}")
    config = _read_json(config_path, role.name)
    if not isinstance(config, dict):
        raise CheckpointError(f"{role.name}: config.json must be a JSON object")
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise CheckpointError(
            f"unsupported architecture {model_type!r} for {role.name} (supported: {supported()})"
        )
    arch = ARCHITECTURES[model_type]
    if role.name not in arch.classes:
        raise CheckpointError(
            f"{role.name}: architecture {model_type!r} cannot serve the {role.name} "
            f"(it serves: {', '.join(arch.classes)})"
        )
    expected = arch.class_names(role.name)
    declared = config.get("architectures") or []
    found = [name for name in expected if name in declared]
    if not found:
        raise CheckpointError(
            f"{role.name}: config.json architectures {declared} is not "
            f"{' or '.join(expected)} (the {role.name} needs a "
            f"{role.head.removeprefix('For')} head)"
        )
    problems = arch.check_config(config)
    if problems:
        raise CheckpointError(f"{role.name}: {problems[0]}")
    _check_weights(role.name, folder)
    tokenizer = folder / "tokenizer.json"
    if not tokenizer.is_file():
        raise CheckpointError(f"{role.name}: missing tokenizer.json in {folder}")
    labels = _labels(role.name, config, spec) if role.needs_labels else None
    if role.name == "classifier" and config.get("pad_token_id") is None:
        raise CheckpointError("classifier: config.json has no pad_token_id")
    pad = config.get("pad_token_id")
    required = REQUIRED_TOKENS[role.name] if arch.cached(role.name) else ("pad",)
    special = _special_tokens(role.name, tokenizer, spec, int(config.get("vocab_size", 0)),
                              pad if isinstance(pad, int) else None, required)
    if not arch.cached(role.name):  # after _special_tokens: the tokenizer file reads
        _check_positions(role.name, config.get("max_position_embeddings"), tokenizer, spec,
                         found[0] == SPAN_GROUP_CLASS)
    elif config.get("position_embedding_type") == "absolute":  # an encoder read causally
        _check_decoding_positions(role.name, config.get("max_position_embeddings"), spec)
    return ModelCheckpoint(role, folder, config, arch, labels, tokenizer, special, found[0])


def validate_checkpoint(root: str | Path, optional: bool = False) -> Checkpoint:
    """Check the whole checkpoint contract without loading weights; with ``optional``, a
    missing model sub-folder is left out of ``models`` (``--reuse`` supplies it) rather
    than refused, though at least one must be there."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint: folder not found: {root}")
    spec, raw = _read_spec(root)
    present = {name: role for name, role in ROLES.items()
               if not optional or (root / name).exists()}
    if not present:
        raise CheckpointError(f"checkpoint: no model sub-folder ({', '.join(ROLES)}) in {root}")
    models = {name: _validate_model(root, role, spec) for name, role in present.items()}
    return Checkpoint(root, spec, raw, models)


def load_model(model: ModelCheckpoint, dtype: Any = None) -> Any:
    """Load the Hugging Face model of one role: safetensors only, no remote code."""
    import torch

    cls = model.architecture.model_class(model.name, model.class_name)
    try:
        hf = cls.from_pretrained(
            model.folder,
            use_safetensors=True,
            dtype=dtype or torch.float32,
            attn_implementation="eager",
        )
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{model.name}: cannot load weights from {model.folder}: {first}"
        ) from None
    return hf.eval()
