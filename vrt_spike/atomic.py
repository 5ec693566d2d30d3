"""Atomic file writes: the one way the project writes a file that others read.

Tables, summaries, caches, spike streams, frames and videos all go through :func:`atomic_path`.
The content is written to a temporary file in the target's folder (named after the target, the
process and the thread, so concurrent writers never share one) and renamed over the target with
``os.replace`` once it is complete: a reader sees the old file or the new one, never half of one,
and an interrupted write leaves the old file and no temporary behind. The temporary file is
created by ``open``, so the result has the permissions of any new file (0o666 less the umask),
not the 0600 of ``tempfile.mkstemp``.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomically", "write_bytes_atomically"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` (same suffix, so writers that pick a format by it work),
    renamed to ``path`` when the block ends normally and removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, line endings as given) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
