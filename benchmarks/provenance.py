"""Check that an artifacts folder was exported from a checkpoint (torch-free).

A checkpoint written by ``benchmarks.make_checkpoint.checkpoint_like`` was not exported
to the artifacts: it mirrors them (their mycelium.json, tokenizers, labels and every
graph's shapes, with the graphs' own weights read back, or random ones), so the same
check holds for it honestly. Its ``LIKE_STAMP`` file says so: :func:`like_stamp` reads
it, for a report to label the baseline by the weights it ran (``weights_from``:
``artifacts`` or ``random``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from mycelium.runtime.errors import MyceliumError
from mycelium.runtime.manifest import Manifest
from mycelium.runtime.spec import SolverSpec

LIKE_STAMP = "checkpoint_like.json"  # written by make_checkpoint.checkpoint_like


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def like_stamp(checkpoint: str | Path) -> dict | None:
    """What a checkpoint made by ``checkpoint_like`` mirrors (``like``: the artifacts
    folder, ``manifest_sha256``, ``precision``, ``seed``, ``weights_from``: ``artifacts``
    (the graphs' weights, dequantized) or ``random``, ``weights``: that in words,
    ``models``: each model's shapes, where its head count came from and, for the
    graphs' weights, how they were mapped and checked); None for any other checkpoint.
    A stamp written before ``weights_from`` existed is of random weights."""
    path = Path(checkpoint) / LIKE_STAMP
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def check_exported_from(checkpoint: Path, manifest: Manifest) -> None:
    """Raise ValueError unless the artifacts look exported from this checkpoint
    (same mycelium.json, same tokenizers, same KV-cache shapes)."""
    try:
        _check(Path(checkpoint), manifest)
    except (OSError, KeyError, json.JSONDecodeError, MyceliumError) as exc:
        raise ValueError(f"checkpoint {checkpoint}: {exc}") from None


def _check(checkpoint: Path, manifest: Manifest) -> None:
    if manifest.writes_programs:
        _check_writer_run(checkpoint, manifest)
        return
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


def _check_writer_run(run: Path, manifest: Manifest) -> None:
    """A program writer's set against the training run it was exported from: the same
    prompt, grammar, base tokenizer and layer count."""
    trained = json.loads((run / "writer.json").read_text(encoding="utf-8"))
    entry = manifest.models["writer"]
    settings = manifest.mycelium["writer"]
    if trained["prompt"] != settings["prompt"]:
        raise ValueError(f"{run}/writer.json has another prompt than the artifacts' writer")
    if trained["alphabet"] != "".join((entry.labels or ())[:-1]):
        raise ValueError(f"{run}/writer.json has another grammar than the artifacts' writer")
    base = Path(trained["base"])
    if _sha256(base / "tokenizer.json") != entry.tokenizer_sha256:
        raise ValueError(f"{base}/tokenizer.json is not the tokenizer of the artifacts' writer")
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    if entry.kv_cache is None or config["num_hidden_layers"] != entry.kv_cache.num_layers:
        raise ValueError(f"{base} has another shape than the artifacts' writer")
