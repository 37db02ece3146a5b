"""What the models fitted into a scratch folder share: the scratch is dropped once saved (or once a trial is
scored); the multi-stage and session models, which live in that one folder, are saved by copying it."""

from __future__ import annotations

import shutil
from pathlib import Path


class FolderModel:
    """Mixin for a dataclass with ``path`` (the model's folder) and ``scratch`` (that folder while unsaved)."""

    path: Path
    scratch: Path | None

    def discard_scratch(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def save(self, path: Path | str) -> None:
        """Copy the model's folder to ``path`` (a fitted model already lives in one)."""
        path = Path(path)
        if path.resolve() != self.path.resolve():
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(self.path, path)
