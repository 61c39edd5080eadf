"""Take the models a checkpoint lacks from an existing artifacts folder (``--reuse``).

Re-exporting one retrained specialist should not need the others' PyTorch weights: a
checkpoint may hold only some of segmenter/, classifier/ and extractor/, and each missing
model is copied from ARTIFACTS as it was exported there (graph, external data, tokenizer,
manifest entry, parity row). The copies are checked against the checkpoint's
mycelium.json like an exported model would be: the precision, the labels and the ids of
the special tokens the role reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mycelium.runtime.errors import ArtifactsError
from mycelium.runtime.manifest import Manifest, ModelSpec, load_manifest
from mycelium.runtime.spec import SolverSpec

from .checkpoint import REQUIRED_TOKENS, _special_tokens, allowed_labels
from .errors import ExportError
from .registry import ARCHITECTURES
from .verify import ParityRow


def open_reused(folder: Path, roles: list[str], precision: str, spec: SolverSpec) -> Manifest:
    """The manifest of ``folder`` (sha256-checked), which must hold ``roles`` at
    ``precision``, each fitting ``spec`` (checked before anything is exported)."""
    try:
        manifest = load_manifest(folder)
    except ArtifactsError as exc:
        raise ExportError(f"--reuse {folder}: {exc}") from None
    missing = [role for role in roles if role not in manifest.models]
    if missing:
        raise ExportError(f"--reuse {folder}: its manifest has no {missing[0]} to take "
                          "(the checkpoint lacks it too)")
    if manifest.precision != precision:
        raise ExportError(f"--reuse {folder}: its models are {manifest.precision}, this export "
                          f"is {precision} (pass --precision {manifest.precision})")
    for role in roles:
        _check_fits(role, manifest.models[role], folder, spec)
    return manifest


def _check_fits(role: str, model: ModelSpec, folder: Path, spec: SolverSpec) -> None:
    """The reused model reads and writes what the checkpoint's mycelium.json expects."""
    allowed = allowed_labels(role, spec)
    unknown = [label for label in model.labels or () if label not in allowed]
    if unknown:
        raise ExportError(f"--reuse {folder}: {role} label {unknown[0]!r} is not in the "
                          f"checkpoint's mycelium.json ({', '.join(allowed)})")
    architecture = ARCHITECTURES.get(model.architecture)
    cached = architecture is not None and role in architecture.classes and (
        architecture.cached(role))
    required = REQUIRED_TOKENS[role] if cached else ()
    tokenizer = folder / model.tokenizer
    found = _special_tokens(role, tokenizer, spec, vocab_size=1 << 31,
                            config_pad=model.special_tokens.get("pad"), required=required)
    changed = [name for name in required if found.get(name) != model.special_tokens.get(name)]
    if changed:
        raise ExportError(f"--reuse {folder}: the {role} was exported with another "
                          f"{changed[0]!r} token than the checkpoint's mycelium.json names")


def copy_reused(role: str, manifest: Manifest, folder: Path,
                target: Path) -> tuple[ModelSpec, ParityRow]:
    """Copy one model's files from ``folder`` into ``target``; its manifest entry and its
    parity row (noted as reused)."""
    model = manifest.models[role]
    for relative in model.files():
        shutil.copyfile(folder / relative, target / relative)
    recorded = dict(manifest.parity.get(role) or {})
    links = recorded["note"].split("; ") if recorded.get("note") else []
    if links[-1:] != [f"reused from {folder}"]:  # the chain, its last link not repeated
        links.append(f"reused from {folder}")
    recorded["note"] = "; ".join(links)
    fields = {k: v for k, v in recorded.items() if k in ParityRow.__dataclass_fields__}
    fields.setdefault("status", "skipped")
    return model, ParityRow(model=role, precision=manifest.precision, **fields)
