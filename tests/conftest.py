"""Shared fixtures: tiny random checkpoints and their exported artifacts (built once per run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is run from the repository, not installed
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 checkpoint (segmenter, classifier, extractor), a few MB."""
    pytest.importorskip("torch")
    from benchmarks.make_checkpoint import make_checkpoint

    return make_checkpoint("tiny", tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _export(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, precision: str):
    from mycelium.export import export_checkpoint

    out = tmp_path_factory.mktemp(f"art_{precision}") / "artifacts"
    return export_checkpoint(checkpoint, out, precision=precision, log=lambda _text: None)


@pytest.fixture(scope="session")
def fp32_export(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path):
    """ExportReport of the tiny checkpoint at fp32 (verified)."""
    return _export(tmp_path_factory, tiny_checkpoint, "fp32")


@pytest.fixture(scope="session")
def int8_export(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path):
    """ExportReport of the tiny checkpoint at int8 (verified)."""
    return _export(tmp_path_factory, tiny_checkpoint, "int8")
