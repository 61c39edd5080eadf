"""Check that an artifacts folder was exported from a checkpoint (torch-free)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from mycelium.runtime.errors import MyceliumError
from mycelium.runtime.manifest import Manifest
from mycelium.runtime.spec import SolverSpec


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_exported_from(checkpoint: Path, manifest: Manifest) -> None:
    """Raise ValueError unless the artifacts look exported from this checkpoint
    (same mycelium.json, same tokenizers, same KV-cache shapes)."""
    try:
        _check(Path(checkpoint), manifest)
    except (OSError, KeyError, json.JSONDecodeError, MyceliumError) as exc:
        raise ValueError(f"checkpoint {checkpoint}: {exc}") from None


def _check(checkpoint: Path, manifest: Manifest) -> None:
    spec = json.loads((checkpoint / "mycelium.json").read_text(encoding="utf-8"))
    # `mycelium-train scorer --write` adds the answer scorer to the artifacts' manifest
    # after export; both runtimes of a comparison use the manifest's
    ours, theirs = (replace(SolverSpec.from_dict(raw), answer_scorer=None)
                    for raw in (spec, manifest.mycelium))
    if ours != theirs:
        raise ValueError(f"{checkpoint}/mycelium.json differs from the artifacts' manifest")
    for name, model in manifest.models.items():
        tokenizer = checkpoint / name / "tokenizer.json"
        if model.tokenizer_sha256 and _sha256(tokenizer) != model.tokenizer_sha256:
            raise ValueError(f"{tokenizer} is not the tokenizer of the artifacts' {name}")
        config = json.loads((checkpoint / name / "config.json").read_text(encoding="utf-8"))
        if model.kv_cache is not None and (
            config["num_hidden_layers"] != model.kv_cache.num_layers
            # an encoder read causally (no grouped-query attention) caches every head
            or config.get("num_key_value_heads", config["num_attention_heads"])
            != model.kv_cache.num_kv_heads
        ):
            raise ValueError(f"{checkpoint}/{name} has another shape than the artifacts' {name}")
