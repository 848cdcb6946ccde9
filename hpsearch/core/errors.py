"""Errors a user can fix. The CLI prints them without a traceback and exits with status 2.

Every message goes through :func:`redact`: a password in a URL
(``postgresql://user:secret@host/db``) reads ``user:***@`` in every error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REDACTED = "***"
# scheme://user:password@ (up to the last '@': an unescaped '@' in a password stays hidden)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):([^\s'\"]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&\s'\"#]*")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``
    (``postgresql://user:***@host/db``; also a ``?password=`` query parameter)."""
    text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    return _QUERY_PASSWORD.sub(rf"\g<1>{REDACTED}", text)


class UserError(ValueError):
    """Bad input: the message names the field or file, the value, and the fix.
    A URL's password in the message is redacted (:func:`redact`)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class RunDirError(UserError):
    """The run directory is missing, incomplete, or belongs to a different spec."""


class StudyStopped(RuntimeError):
    """The study stopped early (for example too many consecutive failures)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


EXIT_STOPPED = 1  # the study stopped early (failures, no complete trial, resources); run kept
EXIT_USER_ERROR = 2  # bad input, refused before anything was written
EXIT_INTERRUPTED = 130


def user_error_types() -> tuple[type[BaseException], ...]:
    """UserError and the validation errors of modules already imported (no heavy imports)."""
    import sys

    errors: list[type[BaseException]] = [UserError]
    for module, name in (
        ("search_spaces.space", "SpaceError"),
        ("hpsearch.core.spec", "SpecError"),
        ("hpsearch.core.data", "DataError"),
    ):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, name):
            errors.append(getattr(mod, name))
    return tuple(errors)


def run_cli(parser, argv=None) -> int:
    """Parse ``argv``, run the chosen command; user errors become one ``error:`` line."""
    import os
    import sys

    args = parser.parse_args(argv)
    # TensorFlow's C++ start-up chatter (CPU features, no CUDA driver) is not for users
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if isinstance(exc, user_error_types()):
            print(f"error: {redact(str(exc))}", file=sys.stderr)
            return EXIT_USER_ERROR
        if isinstance(exc, StudyStopped):
            print(f"error: {redact(str(exc))}", file=sys.stderr)
            return EXIT_STOPPED
        if too_long := path_too_long(exc):
            print(f"error: {redact(too_long)}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise


def path_too_long(exc: BaseException) -> str | None:
    """The one-line message for an ``OSError: File name too long`` (a path given on the
    command line that no file system can hold, found on the first look at it), else None."""
    import errno

    if not isinstance(exc, OSError) or exc.errno != errno.ENAMETOOLONG:
        return None
    name = os.fspath(exc.filename) if exc.filename is not None else "a path"
    shown = repr(name) if len(repr(name)) <= 200 else repr(name)[:197] + "..."
    return (
        f"the path {shown} is too long for the file system ({exc.strerror}). Fix: give a "
        "shorter path (a file or folder name holds at most 255 bytes)."
    )


# --------------------------------------------------------------------------- writable paths


def unwritable(path: str | os.PathLike, kind: str = "dir") -> str | None:
    """Why ``path`` cannot be written, or None when it can.

    ``kind="dir"``: a directory, created with its parents when missing; ``"file"``: a
    file, created (with its parents) or replaced. The nearest existing folder must be a
    directory in which something can be created: it is probed with a temporary folder,
    removed at once (``os.access`` alone says yes to root on ``/proc``).
    """
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if os.path.exists(path):
        if kind == "dir" and not path.is_dir():
            return f"{path} is a file, not a directory"
        if kind == "file" and path.is_dir():
            return f"{path} is a directory, not a file"
        if kind == "file" and not os.access(path, os.W_OK):
            return f"{path} is not writable"
        folder = path if kind == "dir" else path.parent
    else:
        folder = path.parent
        while not os.path.exists(folder) and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            return f"{folder} is a file, not a directory"
    return _probe(folder)


def _probe(folder: Path) -> str | None:
    import tempfile

    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable (permission denied)"
    try:
        probe = tempfile.mkdtemp(prefix=".hpsearch-probe-", dir=folder)
    except OSError as exc:
        return f"nothing can be created in {folder} ({exc.strerror or exc})"
    os.rmdir(probe)
    return None


def check_writable(path: str | os.PathLike, what: str, fix: str, kind: str = "dir") -> None:
    """UserError ``"<what> <path>: cannot be written: <why>. Fix: <fix>"`` when
    :func:`unwritable` finds a reason; nothing is left behind either way."""
    problem = unwritable(path, kind)
    if problem is not None:
        raise UserError(f"{what} {os.fspath(path)}: cannot be written: {problem}. Fix: {fix}")
