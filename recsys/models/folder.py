"""What the models fitted into a scratch folder share: the scratch is dropped once saved (or once a trial is
scored); the multi-stage and session models, which live in that one folder, are saved by copying it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


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


def write_table(folder: Path, columns: dict[str, pa.Array]) -> None:
    """One table of a model's folder: ``folder/part-00000.parquet`` (Spark and pyarrow read the folder alike)."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / "part-00000.parquet")


def vector_column(matrix: np.ndarray) -> pa.ListArray:
    """Rows of a 2-D matrix as an Arrow list<float> column (Spark's factor layout), without Python loops."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    width = matrix.shape[1] if matrix.ndim == 2 else 1
    offsets = np.arange(len(matrix) + 1, dtype=np.int32) * width
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.reshape(-1), pa.float32()))
