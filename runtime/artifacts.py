"""Where the artifacts come from: a folder given, $MYCELIUM_ARTIFACTS, or the embedded default."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ArtifactsError
from .manifest import MANIFEST_NAME

ENV_VAR = "MYCELIUM_ARTIFACTS"


def embedded_default() -> Path:
    """The folder of the default specialists shipped inside the package."""
    return Path(__file__).resolve().parent / "default_artifacts"


def resolve_artifacts(artifacts: str | os.PathLike[str] | None = None) -> Path:
    """The artifacts folder to use; raises ArtifactsError with one clear line if none."""
    if artifacts is not None:
        return Path(artifacts)
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return Path(from_env)
    default = embedded_default()
    if not (default / MANIFEST_NAME).is_file():
        raise ArtifactsError(
            "no embedded default specialists in this build yet: pass --artifacts DIR "
            f"(a folder made by mycelium-export) or set {ENV_VAR}"
        )
    return default
