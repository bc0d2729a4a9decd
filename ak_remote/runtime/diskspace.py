"""Refusing to write a checkpoint into a full disk.

h5py crashes (SIGSEGV) when the disk fills up while it closes an HDF5 file, so a full run folder
must be noticed before a checkpoint is written, not by the write itself. The error raised is a
Keras Tuner FatalError, so the tuner ends the search instead of counting it as a failed trial,
and an OSError with errno ENOSPC, so the job reports it as a full disk (runtime/run.py).
"""

from __future__ import annotations

import errno
import shutil
from typing import Any

from keras_tuner.errors import FatalError

# Room kept beyond the weights themselves (HDF5 metadata, summary.json, event files).
MARGIN_BYTES = 256 * 1024


class DiskFullError(FatalError, OSError):  # type: ignore[misc]
    """Not enough free space in a folder for what is about to be written there."""


def weights_bytes(model: Any) -> int:
    """The bytes a model's weights take in memory (about their size in an HDF5 file)."""
    total = 0
    for weight in getattr(model, "weights", []):
        size = 1
        for dim in weight.shape:
            size *= int(dim or 1)
        total += size * 4
    return total


def ensure_space(folder: str, needed: int) -> None:
    """Raise DiskFullError unless `folder`'s disk has `needed` bytes free, plus a margin."""
    free = shutil.disk_usage(folder).free
    if free < needed + MARGIN_BYTES:
        raise DiskFullError(
            errno.ENOSPC,
            f"No space left on device: {needed + MARGIN_BYTES} bytes needed in {folder}, "
            f"{free} free",
        )
