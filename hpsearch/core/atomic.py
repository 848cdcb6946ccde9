"""Atomic file writes: write to a temporary file in the same directory, fsync, rename.

A reader (or a driver resumed after SIGKILL) sees either the old file or the
new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; run directories are shared (clusters, teams): use the umask
_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def _replacing(path: Path):
    """A binary file handle on a temporary sibling of ``path``; on a clean exit it is
    flushed, fsynced and renamed over ``path``, on an error removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with _replacing(path) as fh:
        fh.write(data)
    return path


def copy_file(src: str | Path, path: str | Path) -> Path:
    """Copy ``src`` to ``path`` atomically, streaming (data files can be large)."""
    import shutil

    path = Path(path)
    with _replacing(path) as fh, open(src, "rb") as fin:
        shutil.copyfileobj(fin, fh, 1 << 20)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    )


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
