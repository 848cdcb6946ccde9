"""Atomic file writes, and the SHA-256 record that lets a reader trust what it loads.

Writes: to a temporary file in the same directory, fsync, rename. A reader (or a
driver resumed after SIGKILL) sees either the old file or the new one, never a torn
one.

Integrity: a writer records the SHA-256 of each artifact it writes
(:func:`write_hashed`) in the JSON that describes it (``trial.json``, ``tree.json``,
``ensemble.json``: a ``"files": {name: sha256}`` map); a reader gets the artifact's
bytes through :func:`read_verified`, which refuses (``RunDirError``) a file whose
bytes do not match, that was never recorded, or that is recorded but missing, and
then deserializes those same bytes, never the path again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.core.errors import RunDirError


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


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` file of ``array`` (no pickled objects)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    return write_bytes(path, npy_bytes(array))


def load_npy(data: bytes) -> np.ndarray:
    """The array of a ``.npy`` file's bytes (``allow_pickle=False``)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


# --------------------------------------------------------------------------- integrity

_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data``: what the ``files`` maps of the run directory record."""
    return hashlib.sha256(data).hexdigest()


def write_hashed(path: str | Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; return its SHA-256, to be recorded."""
    write_bytes(path, data)
    return sha256(data)


def has_hashes(files: Any) -> bool:
    """Whether a ``files`` map records SHA-256s (maps written before they were recorded
    hold shapes and sizes instead)."""
    return isinstance(files, Mapping) and any(
        isinstance(v, str) and _SHA256.fullmatch(v) for v in files.values()
    )


def read_verified(
    path: str | Path,
    files: Any,
    *,
    record: str,
    fix: str,
    who: str = "",
    what: str = "file",
    legacy_fix: str | None = None,
) -> bytes | None:
    """The bytes of ``path``, checked against the SHA-256 that ``files`` (the ``files``
    map of the JSON ``record`` names) holds under the file's name.

    None when the file is neither recorded nor present. ``RunDirError`` (one line:
    ``who``, ``what`` and the path, the problem, ``Fix: fix``) when the bytes do not
    match, when the file is present but was never recorded, when it is recorded but
    missing, or when ``files`` records no hashes at all (``legacy_fix``). Load the
    returned bytes, never the path again.
    """
    path = Path(path)
    head = f"{who}: " if who else ""
    expected = files.get(path.name) if isinstance(files, Mapping) else None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        if expected is None:
            return None
        raise RunDirError(
            f"{head}{what} {path} is missing, though {record} records it. Fix: {fix}"
        ) from None
    except OSError as exc:
        raise RunDirError(f"{head}{what} {path} cannot be read ({exc}). Fix: {fix}") from None
    if not has_hashes(files):
        raise RunDirError(
            f"{head}{what} {path} cannot be checked: {record} records no SHA-256 for the files "
            f"(written before hpsearch recorded them), so it is not loaded. "
            f"Fix: {legacy_fix or fix}"
        )
    if expected is None:
        raise RunDirError(
            f"{head}{what} {path} is not recorded in {record}: it was added after the record "
            f"was written, so it is not loaded. Fix: {fix}"
        )
    if sha256(data) != expected:
        raise RunDirError(
            f"{head}{what} {path} does not match the SHA-256 recorded in {record}: it was "
            f"changed or truncated after it was written, so it is not loaded. Fix: {fix}"
        )
    return data


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
