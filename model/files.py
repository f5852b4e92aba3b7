"""Atomic file writes shared by the run directory (train.py) and topology files."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path, write) -> None:
    """``write(f)`` into PATH.tmp, then rename it over ``path``. On any failure (a full
    disk, an interrupt) the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
