"""The artifacts folder: refuse to overwrite, write into a staging folder, publish at the end.

An export writes beside the destination, in a hidden staging folder, and
renames it into place only when every step succeeded: a failed or interrupted
export never leaves a half-written artifacts folder. ``--force`` replaces an
existing folder, but only one that holds nothing except artifacts files.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ExportError

ARTIFACT_PATTERNS = ("manifest.json", "*.onnx", "*.onnx.data", "*.tokenizer.json")


def check_destination(out: Path, force: bool) -> None:
    """Refuse an existing destination unless ``force`` and it holds only artifacts."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise ExportError(f"output folder {out} exists (use --force to replace it)")
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"output {out} exists and is not a folder; not replacing it")
    foreign = sorted(
        entry.name for entry in out.iterdir()
        if not entry.is_file() or not any(fnmatch.fnmatch(entry.name, p) for p in ARTIFACT_PATTERNS)
    )
    if foreign:
        raise ExportError(
            f"--force refuses to replace {out}: it holds files that are not artifacts "
            f"({', '.join(foreign[:3])})"
        )


class Staging:
    """A staging folder and a scratch folder beside ``out``; ``publish`` renames into place."""

    def __init__(self, out: Path):
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial",
                                            dir=out.parent))
        self.scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".scratch",
                                             dir=out.parent))

    def clear_scratch(self) -> None:
        """Delete the raw exports of the previous model (they can take gigabytes)."""
        for entry in self.scratch.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def publish(self) -> None:
        """Move the staging folder to ``out``, replacing an old artifacts folder."""
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.{os.getpid()}.old")
            self.out.rename(old)
        self.folder.chmod(0o755)  # mkdtemp (and onnx for .data files) made them private
        for entry in self.folder.iterdir():
            entry.chmod(0o644)
        self.folder.rename(self.out)
        if old is not None:
            shutil.rmtree(old)

    def close(self) -> None:
        """Remove what is left of the scratch and (unpublished) staging folders."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
