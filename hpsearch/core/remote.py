"""Run directories at a URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``): a local
working copy kept in step with the remote run.

A search whose ``output`` is a URI runs on a local staging copy of the run
directory (``~/.cache/hpsearch/runs/<hash>``, or under ``$HPSEARCH_CACHE``) and
pushes each file once it is committed there:

- every file is uploaded in one stream, published when the stream closes (an
  object store shows an object whole; on ``file://`` and ``hdfs://`` it is written
  under a hidden temporary name and renamed), so a reader never sees part of a file;
- within a directory the marker (``trial.json``, ``split.json``, ``tree.json``,
  ``ensemble.json``, ``run.json``) is pushed after the other files, so the remote
  run keeps the commit points of docs/run-directory.md;
- the SQLite study (``study.db``) is pushed as a consistent snapshot after each
  finished trial, *before* that trial's ``trial.json``: every ``trial.json`` on the
  remote has its trial in the remote study, which is what ``--resume`` needs to
  settle it.

Commands that read a run (``hpsearch status``, ``ensembles build``) pull the
files they need into a temporary directory; ``ensembles build`` pushes the tree
models and the ensemble it wrote.

Filesystems come from ``pyarrow.fs``; a scheme pyarrow does not know is opened
with fsspec when that is installed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hpsearch.core.errors import RunDirError, StudyStopped, UserError
from hpsearch.core.store import RUN_JSON, SPACE_YAML, SPEC_YAML, STUDY_DB, TRIALS, trial_dirname

CACHE_ENV = "HPSEARCH_CACHE"
# pushed after the other files of their directory: their presence marks the directory complete
# (tree.json and ensemble.json are ensembles' markers, named here as hpsearch never imports it)
MARKERS = ("trial.json", "tree.json", "ensemble.json", "split.json", RUN_JSON)
SETUP_NAMES = frozenset({SPEC_YAML, SPACE_YAML, "data"})  # what a run writes before run.json
UNPUSHED = ".unpushed"  # in a staging copy: some of its files never reached the remote run
# a resume or an ensemble build needs neither the trained networks nor their TensorBoard logs
HEAVY = (
    "trials/*/model.keras",
    "trials/*/model_fold*.keras",
    "trials/*/model.joblib",
    "trials/*/model_fold*.joblib",
    "trials/*/tb/*",
)
STATUS_FILES = (RUN_JSON, STUDY_DB, "trials/*/trial.json")
WORKERS = 8
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
CREDENTIALS_FIX = (
    "check the bucket and path, and that this machine has credentials for them: s3:// uses "
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role (and "
    "AWS_DEFAULT_REGION); gs:// uses GOOGLE_APPLICATION_CREDENTIALS or the VM's service account"
)
HDFS_FIX = (
    "hdfs:// needs Java and Hadoop's libhdfs on this machine (JAVA_HOME, HADOOP_HOME, CLASSPATH)"
)


class SyncError(RunDirError):
    """Files of a run could not be pushed to its URI; the staging copy holds them."""


def is_uri(text: Any) -> bool:
    """Whether ``text`` names a location by URI (``scheme://...``, ``file://`` included)."""
    return isinstance(text, str) and bool(_SCHEME.match(text))


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hpsearch"


def default_staging(uri: str) -> Path:
    """The driver's working copy of the run at ``uri`` on this machine."""
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return cache_root() / "runs" / digest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, path inside it)`` for ``uri``; UserError naming the fix."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # ArrowInvalid, ArrowNotImplementedError, OSError
        error = exc
    scheme = uri.split("://", 1)[0]
    if "Unrecognized filesystem type" not in str(error):
        fix = HDFS_FIX if scheme in ("hdfs", "viewfs") else CREDENTIALS_FIX
        raise UserError(f"cannot open {uri!r}: {_first_line(error)}. Fix: {fix}.")
    try:
        import fsspec
    except ImportError:
        fsspec = None
    if fsspec is not None:
        try:
            fsspec_fs, path = fsspec.core.url_to_fs(uri)
        except Exception as exc:  # unknown protocol, or its package is missing
            error = exc
        else:
            return fs.PyFileSystem(fs.FSSpecHandler(fsspec_fs)), path
    raise UserError(
        f"cannot open {uri!r}: no filesystem for {scheme}:// ({_first_line(error)}). Fix: use "
        "a local path, file:///absolute/path, s3://bucket/path, gs://bucket/path or "
        f"hdfs://host/path, or install fsspec and its package for {scheme}://."
    )


def _wanted(rel: str, include: Sequence[str] | None, exclude: Sequence[str]) -> bool:
    """Not hidden (locks, temporary files), matched by ``include``, not by ``exclude``."""
    if any(part.startswith(".") for part in rel.split("/")):
        return False
    if include is not None and not any(fnmatch.fnmatchcase(rel, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(rel, p) for p in exclude)


def markers_last(rels: Iterable[str]) -> list[str]:
    """Plain files first, then markers, deepest first: ``run.json`` is the very last."""
    rels = sorted(rels)
    plain = [r for r in rels if r.rsplit("/", 1)[-1] not in MARKERS]
    marks = [r for r in rels if r.rsplit("/", 1)[-1] in MARKERS]
    return plain + sorted(marks, key=lambda r: (-r.count("/"), r))


class RemoteRun:
    """A run directory at ``uri`` and a local copy of it at ``local``.

    Args:
        uri: where the run lives, any URI :func:`open_filesystem` opens.
        local: the local copy (default: :func:`default_staging`, the driver's).
    """

    def __init__(self, uri: str, local: str | Path | None = None):
        self.uri = uri.rstrip("/")
        self.fs, base = open_filesystem(self.uri)
        self.base = base.rstrip("/")
        self.local = Path(local) if local is not None else default_staging(self.uri)
        # a file being written is visible there: write a hidden name, then rename
        self._rename = self.fs.type_name in ("local", "hdfs")

    def __repr__(self) -> str:
        return f"RemoteRun({self.uri!r}, local={str(self.local)!r})"

    # -- paths and errors -----------------------------------------------------
    def _remote(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def _rel(self, path: str) -> str:
        # filesystems differ on a leading slash (fsspec handlers drop it for some schemes)
        return path.lstrip("/")[len(self.base.lstrip("/")) :].lstrip("/")

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (OSError, ValueError) as exc:
            if isinstance(exc, UserError):
                raise
            raise RunDirError(
                f"cannot {what} {self.uri}: {_first_line(exc)}. Fix: {CREDENTIALS_FIX}."
            ) from None

    # -- the remote side ------------------------------------------------------
    def exists(self) -> bool:
        """Whether the remote location holds a run (its ``run.json``)."""
        from pyarrow import fs

        info = self._call("read", lambda: self.fs.get_file_info(self._remote(RUN_JSON)))
        return info.type == fs.FileType.File

    def kind(self) -> str:
        """``run``, ``setup`` (a run interrupted before ``run.json``), ``empty`` or ``other``."""
        from pyarrow import fs

        def probe() -> str:
            info = self.fs.get_file_info(self.base)
            if info.type == fs.FileType.NotFound:
                return "empty"
            if info.type != fs.FileType.Directory:
                return "other"
            entries = self.fs.get_file_info(fs.FileSelector(self.base, recursive=False))
            names = {self._rel(e.path).split("/")[0] for e in entries}
            names = {n for n in names if n and not n.startswith(".")}
            if RUN_JSON in names:
                return "run"
            if not names:
                return "empty"
            return "setup" if names <= SETUP_NAMES else "other"

        return self._call("read", probe)

    def remote_files(self) -> list[str]:
        """Every file of the remote run, relative to it."""
        from pyarrow import fs

        selector = fs.FileSelector(self.base, recursive=True, allow_not_found=True)
        infos = self._call("list", lambda: self.fs.get_file_info(selector))
        return sorted(self._rel(i.path) for i in infos if i.type == fs.FileType.File)

    # -- remote -> local ------------------------------------------------------
    def pull(self, include: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> int:
        """Replace ``local`` with a copy of the remote run (the files ``include`` matches,
        less those ``exclude`` matches; fnmatch patterns on relative paths).

        Files land in a temporary sibling that is renamed into place, so an
        interrupted pull leaves the previous copy. Returns the number of files.
        """
        rels = [r for r in self.remote_files() if _wanted(r, include, exclude)]
        self.local.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(
            tempfile.mkdtemp(
                prefix=f".{self.local.name}.", suffix=".partial", dir=self.local.parent
            )
        )
        old = None
        try:
            self._map(lambda rel: self._download(rel, partial / rel), rels)
            if self.local.exists():
                old = self.local.with_name(f".{self.local.name}.{uuid.uuid4().hex[:8]}.old")
                self.local.rename(old)
            partial.rename(self.local)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return len(rels)

    def clear(self) -> None:
        """An empty local copy (a new run)."""
        if self.local.exists():
            shutil.rmtree(self.local)
        self.local.mkdir(parents=True)

    def _download(self, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)

        def get() -> None:
            with self.fs.open_input_stream(self._remote(rel)) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 8 * 2**20)

        self._call("read from", get)

    # -- local -> remote ------------------------------------------------------
    def local_files(self, rel_dir: str = "") -> list[str]:
        """The files under ``local/rel_dir`` (no hidden ones), markers last."""
        root = self.local / rel_dir if rel_dir else self.local
        rels = (p.relative_to(self.local).as_posix() for p in root.rglob("*") if p.is_file())
        return markers_last(r for r in rels if _wanted(r, None, ()))

    def push(self, rels: Iterable[str]) -> None:
        """Upload these local files, one after the other, in the order given."""
        for rel in rels:
            self._upload(self.local / rel, rel)

    def push_tree(self, rel_dir: str = "") -> list[str]:
        """Upload every file under ``rel_dir``: plain files (in parallel), then the markers
        (``study.db`` as a snapshot just before them). Returns the files pushed."""
        rels = self.local_files(rel_dir)
        plain = [r for r in rels if r.rsplit("/", 1)[-1] not in MARKERS and r != STUDY_DB]
        self._map(lambda rel: self._upload(self.local / rel, rel), plain)
        if STUDY_DB in rels:
            self.push_sqlite(STUDY_DB)
        self.push(r for r in rels if r.rsplit("/", 1)[-1] in MARKERS)
        return rels

    def push_sqlite(self, rel: str = STUDY_DB) -> None:
        """Upload a consistent snapshot of the SQLite database at ``local/rel``."""
        src = self.local / rel
        fd, tmp = tempfile.mkstemp(prefix=f".{src.name}.", suffix=".snapshot", dir=src.parent)
        os.close(fd)
        try:
            with (
                contextlib.closing(sqlite3.connect(src, timeout=60)) as db,
                contextlib.closing(sqlite3.connect(tmp)) as copy,
            ):
                db.backup(copy)
            self._upload(Path(tmp), rel)
        finally:
            os.unlink(tmp)

    def _upload(self, src: Path, rel: str) -> None:
        data = src.read_bytes()
        target = self._remote(rel)

        def put() -> None:
            if not self._rename:  # an object store publishes the object when the stream closes
                with self.fs.open_output_stream(target) as out:
                    out.write(data)
                return
            parent = target.rsplit("/", 1)[0]
            self.fs.create_dir(parent, recursive=True)
            tmp = f"{parent}/.{target.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}.tmp"
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, target)

        self._call("write to", put)

    def _map(self, fn: Callable[[str], None], rels: Sequence[str]) -> None:
        if len(rels) <= 1:
            for rel in rels:
                fn(rel)
            return
        with ThreadPoolExecutor(min(WORKERS, len(rels))) as pool:
            list(pool.map(fn, rels))

    # -- the driver's copy ----------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the local copy for this process (a lock file beside it, which also names
        the URI), so that two drivers on this machine never share one copy."""
        import fcntl

        path = self.local.with_name(self.local.name + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirError(
                    f"run {self.uri} is in use by another hpsearch driver on this machine "
                    f"(its copy {self.local} is locked). Fix: wait for that driver to finish "
                    "or stop it, then run again (with --resume to continue the run)."
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"{self.uri}\npid {os.getpid()}\n")
            fh.flush()
            yield

    def stage(self, resume: bool) -> None:
        """Make the local copy the driver's starting point; call it holding :meth:`locked`.

        A copy whose pushes failed is pushed first (``--resume`` only). Otherwise the
        remote run is pulled (its ``run.json`` only without ``--resume``: enough for
        the driver to refuse), the set-up of an interrupted run is pulled whole, and a
        new run starts from an empty copy. Anything else at the URI is refused.
        """
        if (self.local / UNPUSHED).exists():
            if not resume:
                raise RunDirError(
                    f"{self.local} holds files of run {self.uri} that were never pushed there "
                    "(a push failed). Fix: add --resume to push them and continue the run."
                )
            self.push_tree()
            (self.local / UNPUSHED).unlink()
            return
        kind = self.kind()
        if kind == "other":
            raise RunDirError(
                f"output {self.uri} exists, is not empty and holds no run. "
                "Fix: choose a new `output`; hpsearch never overwrites files."
            )
        if kind == "run":
            self.pull(include=None if resume else (RUN_JSON,), exclude=HEAVY)
        elif kind == "setup":
            self.pull()
        else:
            self.clear()


# --------------------------------------------------------------------------- the driver


class RunSync:
    """The driver's commit points. For a run directory on a local path they do nothing."""

    def setup_written(self) -> None:
        """``data/``, ``spec.yaml``, ``space.yaml`` and ``run.json`` are written."""

    def trial_written(self, number: int) -> None:
        """``trials/<number>/`` is written (``trial.json`` included), not yet told."""

    def finished(self, strict: bool = True) -> None:
        """The search ended and ``run.json`` is updated; ``strict``: raise if files are
        left unpushed."""


class RemoteSync(RunSync):
    """Pushes the driver's staging copy to the remote run at each commit point.

    A push that fails (network, credentials) is kept with everything after it and
    tried again at the next commit point, so a short outage costs no trial; the
    copy is marked (``.unpushed``) until the queue is empty.
    """

    def __init__(
        self, remote: RemoteRun, *, sqlite: bool, warn: Callable[[str], None] | None = None
    ):
        self.remote = remote
        self.sqlite = sqlite
        self.pending: list[str] = []
        self.error: str | None = None
        self.warn = warn or (lambda msg: print(f"\nwarning: {msg}", file=sys.stderr, flush=True))

    def setup_written(self) -> None:
        self._push([*self.remote.local_files("data"), SPEC_YAML, SPACE_YAML, RUN_JSON])

    def trial_written(self, number: int) -> None:
        *files, commit = self.remote.local_files(f"{TRIALS}/{trial_dirname(number)}")
        self._push([*files, *self._study(), commit])

    def finished(self, strict: bool = True) -> None:
        self._push([*self._study(), RUN_JSON])
        if self.pending and strict:
            raise SyncError(
                f"{len(self.pending)} file(s) of the run could not be pushed to "
                f"{self.remote.uri} ({self.error}). The complete run is in {self.remote.local}. "
                f"Fix: {CREDENTIALS_FIX}; then `hpsearch run SPEC --resume` on this machine "
                "pushes them before it continues."
            )

    def _study(self) -> list[str]:
        return [STUDY_DB] if self.sqlite and (self.remote.local / STUDY_DB).exists() else []

    def _push(self, rels: list[str]) -> None:
        self.pending.extend(rels)
        try:
            while self.pending:
                rel = self.pending[0]
                if rel == STUDY_DB:
                    self.remote.push_sqlite(rel)
                else:
                    self.remote.push([rel])
                self.pending.pop(0)
        except (RunDirError, OSError) as exc:
            if self.error is None:
                self.warn(
                    f"{exc} The run goes on in {self.remote.local}; the push is tried again "
                    "after the next trial."
                )
            self.error = _first_line(exc)
            (self.remote.local / UNPUSHED).touch()
            return
        if self.error is not None:
            self.warn(f"pushing to {self.remote.uri} works again; the run there is up to date.")
            self.error = None
        with contextlib.suppress(FileNotFoundError):
            (self.remote.local / UNPUSHED).unlink()


@contextlib.contextmanager
def driver_output(spec: Any, resume: bool) -> Iterator[tuple[Path | None, RunSync]]:
    """Where the driver writes the run of ``spec`` and how it publishes it.

    Yields ``(None, RunSync())`` for a local ``output``. For a URI: the staging copy,
    held and prepared by :meth:`RemoteRun.stage`, and a :class:`RemoteSync`; errors
    inside name the run by its URI rather than by the staging path.
    """
    if not is_uri(spec.output):
        yield None, RunSync()
        return
    remote = RemoteRun(spec.output)
    with remote.locked(), _named_by_uri(remote):
        remote.stage(resume)
        yield remote.local, RemoteSync(remote, sqlite=spec.storage is None)


@contextlib.contextmanager
def local_copy(
    run: str | os.PathLike, include: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> Iterator[tuple[Path, RemoteRun | None]]:
    """A local path for the run ``run``: the path itself, or for a URI a temporary copy of
    the files ``include`` names (less ``exclude``) with the :class:`RemoteRun` to push
    back to. The copy is removed when the block ends."""
    if not is_uri(str(run)):
        yield Path(run), None
        return
    with tempfile.TemporaryDirectory(prefix="hpsearch-run-") as tmp:
        remote = RemoteRun(str(run), local=Path(tmp) / "run")
        if not remote.exists():
            raise RunDirError(
                f"{remote.uri} is not a run directory (no {RUN_JSON}). "
                "Fix: give the `output` of a search made by `hpsearch run`."
            )
        remote.pull(include, exclude)
        with _named_by_uri(remote):
            yield remote.local, remote


@contextlib.contextmanager
def _named_by_uri(remote: RemoteRun) -> Iterator[None]:
    """Errors about the run name it by its URI rather than by its local copy."""
    try:
        yield
    except (UserError, StudyStopped) as exc:
        if not isinstance(exc, SyncError) and len(exc.args) == 1:
            exc.args = (str(exc.args[0]).replace(str(remote.local), remote.uri),)
        raise
