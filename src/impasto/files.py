"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path | str, *, mode: int | None = None) -> Iterator[str]:
    """A temporary path beside ``path``, renamed onto it when the block ends without error.

    On any error the temporary file is removed and ``path`` is left as it was. The file
    gets ``mode``, by default the usual one (0666 minus the umask), not mkstemp's 0600, so
    workers running as other users can read caches and results.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
