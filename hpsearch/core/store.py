"""The run directory: everything a search produced, laid out for people and for `ensembles`.

See docs/run-directory.md for the layout. The driver is the only writer of a
run directory during a search; every file is written atomically and a trial's
``trial.json`` is written last, so a trial directory with a ``trial.json`` is
complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.core import atomic
from hpsearch.core.errors import RunDirError

RUN_JSON = "run.json"
SPEC_YAML = "spec.yaml"
SPACE_YAML = "space.yaml"
STUDY_DB = "study.db"
TRIALS = "trials"
TRIAL_JSON = "trial.json"
LOCK = ".lock"
DAMAGED = "damaged"  # RUN_DIR/damaged/trials/<n>: damaged trials --resume moved aside
PRED_SPLITS = ("valid", "holdout", "oof", "test")  # oof: cross-validated runs (no valid, holdout)
FAULT_ENV = "HPSEARCH_FAULT"


def fault_point(point: str, number: int) -> None:
    """Drill hook: SIGKILL this process at ``point`` when ``HPSEARCH_FAULT=<point>:<number>``.

    Fault drills (tests/test_faults.py, docs/faults.md) kill the driver at exact
    places in the write order; with the variable unset this is a no-op.
    """
    if os.environ.get(FAULT_ENV) == f"{point}:{number}":
        os.kill(os.getpid(), signal.SIGKILL)


MODEL_FORMATS = ("keras", "joblib")  # a trial's model files: model.keras or model.joblib


def _model_ext(model_format: str | None) -> str:
    fmt = model_format or "keras"
    if fmt not in MODEL_FORMATS:
        raise RunDirError(
            f"model format {fmt!r} is not one hpsearch writes ({', '.join(MODEL_FORMATS)}). "
            "Fix: return TrialResult.model_format 'keras' or 'joblib' from the trial function."
        )
    return fmt


def model_name(model_format: str | None = "keras") -> str:
    """The file of a trial's model: ``model.keras``, or ``model.joblib`` (a tree trial)."""
    return f"model.{_model_ext(model_format)}"


def fold_model_name(fold: int, model_format: str | None = "keras") -> str:
    """The file of fold ``fold``'s model in a cross-validated trial: ``model_fold<k>.keras``
    or ``model_fold<k>.joblib``."""
    return f"model_fold{int(fold)}.{_model_ext(model_format)}"


def trial_dirname(number: int) -> str:
    return f"{number:05d}"


@dataclass
class TrialRecord:
    """A finished trial as stored in ``trials/<n>/trial.json``.

    Its artifacts are read through :meth:`file_bytes`, which checks them against the
    SHA-256s of ``trial.json``'s ``files`` map before anything is deserialized.
    ``sha256`` is the hash of ``trial.json`` itself, as read (an ensemble records it).
    """

    path: Path
    info: dict[str, Any]
    sha256: str | None = None

    @property
    def number(self) -> int:
        return int(self.info["number"])

    @property
    def state(self) -> str:
        return self.info["state"]

    @property
    def value(self) -> float | None:
        return self.info.get("value")

    @property
    def params(self) -> dict[str, Any]:
        return self.info.get("params", {})

    @property
    def files(self) -> dict[str, Any]:
        """File name -> SHA-256 of each file the trial wrote (``trial.json``'s ``files``)."""
        files = self.info.get("files")
        return files if isinstance(files, dict) else {}

    def has_predictions(self, split: str) -> bool:
        return (self.path / f"{split}_pred.npy").exists()

    def file_bytes(
        self, name: str, *, who: str | None = None, what: str = "file", fix: str | None = None
    ) -> bytes | None:
        """The bytes of the trial's file ``name`` (None when it has none), checked against
        the SHA-256 recorded in ``trial.json``; ``RunDirError`` when they differ, when the
        file was never recorded, or when a recorded file is missing."""
        return atomic.read_verified(
            self.path / name,
            self.info.get("files"),
            record=str(self.path / TRIAL_JSON),
            who=who or f"trial {self.number}",
            what=what,
            fix=fix or TRIAL_FIX.format(path=self.path),
            legacy_fix=LEGACY_TRIAL_FIX,
        )

    def predictions(
        self, split: str, *, who: str | None = None, fix: str | None = None
    ) -> np.ndarray:
        path = self.path / f"{split}_pred.npy"
        data = self.file_bytes(path.name, who=who, what=f"{split} prediction file", fix=fix)
        if data is None:
            raise RunDirError(f"trial {self.number}: no {split} predictions at {path}.")
        try:
            return atomic.load_npy(data)
        except (ValueError, OSError, EOFError) as exc:
            raise RunDirError(
                f"trial {self.number}: prediction file {path} is unreadable ({exc}). "
                "Fix: resume the run (`hpsearch run SPEC --resume` moves the trial aside and "
                "runs it again), or delete the trial directory to leave the trial out."
            ) from exc

    @property
    def model_format(self) -> str:
        """How the trial's model is saved: ``keras`` (``model.keras``) or ``joblib``
        (``model.joblib``, a tree trial); ``trial.json``'s ``model_format``."""
        fmt = self.info.get("model_format") or "keras"
        return fmt if fmt in MODEL_FORMATS else "keras"

    @property
    def model_path(self) -> Path:
        return self.path / model_name(self.model_format)

    def model_bytes(self, *, fix: str | None = None) -> bytes | None:
        """The verified bytes of ``model.keras`` (``model.joblib``); None when the trial
        saved no model."""
        return self.file_bytes(self.model_path.name, what="model", fix=fix)

    @property
    def folds(self) -> int | None:
        """The number of folds of a cross-validated trial (``trial.json``'s ``cv``); None
        for a trial of a train/valid/holdout run."""
        cv = self.info.get("cv")
        k = cv.get("folds") if isinstance(cv, dict) else None
        return int(k) if isinstance(k, int) and not isinstance(k, bool) and k > 0 else None

    def fold_model_bytes(self, fold: int, *, fix: str | None = None) -> bytes | None:
        """The verified bytes of fold ``fold``'s ``model_fold<k>.keras`` (cross-validated
        trials); None when the trial saved no model."""
        name = fold_model_name(fold, self.model_format)
        return self.file_bytes(name, what=f"fold {fold} model", fix=fix)


TRIAL_FIX = (
    "restore {path} from a copy of the run, or delete that trial directory (an ensemble "
    "then leaves the trial out)."
)
LEGACY_TRIAL_FIX = (
    "run the search again into a new `output` (`hpsearch run SPEC`): this run was made "
    "before hpsearch recorded the SHA-256 of its files."
)


def load_joblib_model(data: bytes) -> Any:
    """A tree estimator from the bytes of a ``model.joblib`` that the caller has checked
    against the SHA-256 its record holds (unpickling runs whatever the file was made to
    run: never call this on unchecked bytes)."""
    import joblib

    return joblib.load(io.BytesIO(data))


def load_keras_model(
    data: bytes, *, path: str | Path = "model.keras", who: str = "", fix: str | None = None
) -> Any:
    """A Keras model from the verified bytes of a ``model.keras``, in safe mode (no code
    from the file runs). The bytes are loaded from a private temporary copy, so what is
    loaded is what was checked.

    A file Keras refuses (safe mode: a ``Lambda`` layer or other Python code in it) or
    cannot read is a ``RunDirError`` of one line naming ``path`` (the file the bytes came
    from; ``who``: the trial or member) and ``fix``, never a Keras traceback.
    """
    import tempfile

    import keras

    import search_spaces.families.custom_layers  # noqa: F401  (registers the families' layers)

    with tempfile.TemporaryDirectory(prefix="hpsearch-model-") as tmp:
        copy = Path(tmp) / "model.keras"
        copy.write_bytes(data)
        try:
            return keras.saving.load_model(copy, compile=False, safe_mode=True)
        except Exception as exc:  # whatever the file holds, Keras' error is not for users
            raise RunDirError(_keras_refusal(exc, str(copy), path, who, fix)) from None


def _keras_refusal(
    exc: BaseException, copy: str, path: str | Path, who: str, fix: str | None
) -> str:
    """The one-line message for a ``model.keras`` that Keras refused or could not read."""
    import zipfile

    head = f"{who}: " if who else ""
    text = " ".join(str(exc).replace(copy, str(path)).split())
    if "safe_mode" in text:
        return (
            f"{head}model {path} is refused by Keras safe mode: it holds Python code (such as "
            "a Lambda layer) that loading would run, so it is not loaded. Fix: only if you "
            "trust whoever wrote the run, load it yourself with `keras.saving.load_model(path, "
            "safe_mode=False)`; otherwise leave that trial out (delete its trial directory, "
            "then build any ensemble that uses it again), and save models without Python code "
            "(no Lambda layers) in the trial function."
        )
    if not zipfile.is_zipfile(copy):
        text = "it is not a .keras zip archive"
    else:
        text = f"{type(exc).__name__}: {text if len(text) <= 200 else text[:197] + '...'}"
    fix = (fix or "restore it from a copy of the run, or retrain that trial.").rstrip(".")
    return f"{head}model {path} cannot be loaded by Keras ({text}). Fix: {fix}."


def link_problem(path: Path, root: Path) -> str | None:
    """Why the symbolic link ``path`` inside the run directory ``root`` is refused: it
    points outside ``root``, or it stands where hpsearch writes and deletes (``trials/``, a
    trial, ``trees/``, a tree, ``ensembles/``, an ensemble, ``data/``). None otherwise."""
    target = Path(os.path.realpath(path))
    real_root = Path(os.path.realpath(root))
    if not target.is_relative_to(real_root):
        return f"a symbolic link to {target}, outside the run directory"
    rel = path.relative_to(root).parts
    if rel and rel[0] in WRITTEN_DIRS and len(rel) <= 2:
        return f"a symbolic link (to {target}) where hpsearch writes and deletes"
    return None


WRITTEN_DIRS = ("trials", "trees", "ensembles", "data", DAMAGED)
LINK_FIX = (
    "Fix: replace the link with a copy of what it points to, or remove it; hpsearch "
    "neither reads nor writes a run directory through such links."
)


class RunDir:
    """A run directory on the local filesystem."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- layout -------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def trials_dir(self) -> Path:
        return self.path / TRIALS

    @property
    def ensembles_dir(self) -> Path:
        return self.path / "ensembles"

    @property
    def default_storage(self) -> str:
        return f"sqlite:///{(self.path / STUDY_DB).resolve()}"

    def trial_path(self, number: int) -> Path:
        return self.trials_dir / trial_dirname(number)

    def exists(self) -> bool:
        return self.run_json.exists()

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory for this process, so two drivers never write one run.

        An advisory ``flock`` on ``.lock``: released when the block ends or the process
        dies (SIGKILL included), so a crashed driver never leaves a stale lock.
        """
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        self.check_links()  # before .lock is opened: it could be a link out of the run
        with open(self.path / LOCK, "a+", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise RunDirError(
                    f"run directory {self.path} is in use by another hpsearch driver "
                    f"({holder}). Fix: wait for it to finish or stop it, then run again "
                    "(with --resume to continue the run)."
                ) from None
            # who holds it, for the message above (informational: not written atomically)
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            fh.flush()
            yield

    def check_links(self) -> None:
        """RunDirError naming the first symbolic link under the run directory that points
        outside it, or that stands where hpsearch writes (see :func:`link_problem`).

        Checked when a run is opened or resumed (:meth:`locked`, :meth:`check_storage`),
        before an ensemble is built, and before a trial's files are written."""
        if not self.path.is_dir():
            return
        stack = [self.path]
        while stack:
            folder = stack.pop()
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                path = Path(entry.path)
                if entry.is_symlink():
                    self.check_not_link(path)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(path)

    def check_not_link(self, path: Path) -> None:
        """RunDirError when ``path``, inside the run directory, is a symbolic link that
        :func:`link_problem` refuses (checked again right before hpsearch writes there)."""
        problem = link_problem(path, self.path) if path.is_symlink() else None
        if problem:
            raise RunDirError(f"run directory {self.path}: {path} is {problem}. {LINK_FIX}")

    def is_interrupted_setup(self) -> bool:
        """Only the files a run writes before ``run.json`` (a driver died setting it up)."""
        if self.exists() or not self.path.is_dir():
            return False

        def ours(p: Path, names: set[str]) -> bool:
            return p.name in names or (p.name.startswith(".") and p.name.endswith(".tmp"))

        top = {SPEC_YAML, SPACE_YAML, "data", LOCK}
        data = {"split.json", "preprocessor.json", "target.json", "columns.json"}
        return all(ours(p, top) for p in self.path.iterdir()) and (
            not self.data_dir.is_dir() or all(ours(p, data) for p in self.data_dir.iterdir())
        )

    # -- run metadata -------------------------------------------------------
    def read_meta(self) -> dict[str, Any]:
        if not self.run_json.exists():
            if (self.path / "pipeline.json").is_file():  # `hpsearch pipeline` with `spaces`
                runs = sorted(p.name for p in self.path.iterdir() if (p / RUN_JSON).is_file())
                raise RunDirError(
                    f"{self.path} is not a run directory (no {RUN_JSON}) but a pipeline of "
                    f"several runs ({', '.join(runs) or 'none yet'}). Fix: pass one of them, "
                    f"e.g. {self.path / (runs[0] if runs else '<space>')}."
                )
            raise RunDirError(
                f"{self.path} is not a run directory (no {RUN_JSON}). "
                "Fix: pass the `output` directory of a spec that has been run with `hpsearch run`."
            )
        return read_run_json(self.run_json, "run.json")

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic.write_json(self.run_json, meta)

    def storage_url(self) -> str:
        meta = self.read_meta()
        return meta.get("storage") or self.default_storage

    def check_storage(self) -> None:
        """RunDirError when the run's SQLite study file is gone but trials were recorded
        (opening it would silently start an empty study; other URLs are checked on open),
        or when a symbolic link leads out of the run (:meth:`check_links`)."""
        self.check_links()
        url = self.storage_url()
        prefix = "sqlite:///"
        if url.startswith(prefix) and Path(url[len(prefix) :]).exists():
            _check_sqlite_file(Path(url[len(prefix) :]))
            return
        if not url.startswith(prefix):
            return
        n = len(self.trial_numbers())  # a damaged trial.json counts: it is still recorded
        if n:
            raise RunDirError(
                f"run directory {self.path}: the study storage {url[len(prefix) :]} is missing "
                f"but {n} trial(s) are recorded in {self.trials_dir}. Fix: restore the run's "
                "study.db (from a backup or the copy it came from), or start a new run with a "
                "different `output`."
            )

    # -- trials -------------------------------------------------------------
    def write_trial(
        self, result: Any, params: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> Path:
        """Persist a TrialResult: artifacts first, ``trial.json`` last (the commit point)."""
        tdir = self.trial_path(result.number)
        for path in (self.trials_dir, tdir):
            self.check_not_link(path)
        if tdir.exists() and not (tdir / TRIAL_JSON).exists():
            # Leftovers of a driver killed while writing: start the trial directory afresh.
            shutil.rmtree(tdir)
        tdir.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}  # name -> SHA-256, checked by every reader
        for split, pred in (result.predictions or {}).items():
            name = f"{split}_pred.npy"
            files[name] = atomic.write_hashed(tdir / name, atomic.npy_bytes(pred))
        model_format = getattr(result, "model_format", None) or "keras"
        if result.model_bytes:
            name = model_name(model_format)
            files[name] = atomic.write_hashed(tdir / name, result.model_bytes)
        for fold, data in enumerate(getattr(result, "fold_models", None) or ()):
            name = fold_model_name(fold, model_format)  # cross-validated: one model per fold
            files[name] = atomic.write_hashed(tdir / name, data)
        if result.history:
            data = _history_csv(result.history).encode("utf-8")
            files["history.csv"] = atomic.write_hashed(tdir / "history.csv", data)
        if result.tb_bytes:  # TensorBoard logs: for people, never loaded, not hashed
            tb = tdir / "tb"
            if tb.exists():
                shutil.rmtree(tb)
            with tarfile.open(fileobj=io.BytesIO(result.tb_bytes), mode="r:gz") as tar:
                tar.extractall(tb, filter="data")
        fault_point("kill_after_files", result.number)
        info = {
            "number": result.number,
            "state": result.state,
            "value": result.value,
            "metrics": result.metrics,
            "params": params,
            "duration_s": round(float(result.duration_s or 0.0), 4),
            "epochs": result.epochs,
            "n_params": result.n_params,
            "node_id": result.node_id,
            "hostname": result.hostname,
            "pid": result.pid,
            "error": result.error,
            "reason": result.reason,
            "traceback": result.traceback,
            "files": files,
            "model_format": model_format,
            **(result.extra or {}),
            **(extra or {}),
        }
        atomic.write_json(tdir / TRIAL_JSON, info)
        return tdir

    def read_trial(self, number: int) -> TrialRecord | None:
        tdir = self.trial_path(number)
        path = tdir / TRIAL_JSON
        if not path.exists():
            return None
        return _trial_record(tdir)

    def trials(self, state: str | None = None) -> list[TrialRecord]:
        out = []
        if not self.trials_dir.exists():
            return out
        for tdir in sorted(self.trials_dir.iterdir()):
            path = tdir / TRIAL_JSON
            if not path.exists():
                continue
            rec = _trial_record(tdir)
            if state is None or rec.state == state:
                out.append(rec)
        return out

    def trial_numbers(self) -> list[int]:
        """The numbers of the committed trial directories (those holding a ``trial.json``),
        from their names: no ``trial.json`` is read, so a damaged one is counted too."""
        if not self.trials_dir.is_dir():
            return []
        out = []
        for tdir in sorted(self.trials_dir.iterdir()):
            if tdir.name.isdigit() and (tdir / TRIAL_JSON).exists():
                out.append(int(tdir.name))
        return out

    def trial_damage(self, number: int) -> str | None:
        """Why committed trial ``number`` cannot be used as it is: its ``trial.json`` is
        damaged (or lacks its number and state), or, for a COMPLETE trial, a prediction
        file is missing though recorded, does not match its recorded SHA-256, was added
        unrecorded, or does not load. None when it is sound; a record written before
        hashes were recorded is not checked. The reason is one line without its ``Fix:``
        (``--resume`` moves such a trial aside and runs it again)."""
        try:
            rec = self.read_trial(number)
            if rec is None or rec.info.get("state") != "COMPLETE":
                return None
            if not atomic.has_hashes(rec.info.get("files")):
                return None
            for split in PRED_SPLITS:
                if f"{split}_pred.npy" in rec.files or rec.has_predictions(split):
                    rec.predictions(split)  # checked against its SHA-256, then loaded
        except RunDirError as exc:
            return str(exc).split(" Fix: ", 1)[0]
        return None

    def move_aside(self, number: int, why: str) -> Path:
        """Move trial ``number``'s directory to ``damaged/trials/<n>`` (``<n>-2``, ... when
        taken), with ``why`` in its ``damaged.txt``; returns where it went. A rename: the
        trial is either in ``trials/`` or moved, never half."""
        src = self.trial_path(number)
        dest_root = self.path / DAMAGED / TRIALS
        for path in (self.trials_dir, src, self.path / DAMAGED, dest_root):
            self.check_not_link(path)
        dest_root.mkdir(parents=True, exist_ok=True)
        dest, k = dest_root / src.name, 1
        while dest.exists():
            k += 1
            dest = dest_root / f"{src.name}-{k}"
        os.rename(src, dest)
        atomic.write_text(dest / "damaged.txt", why + "\n")
        return dest

    def remove_incomplete_trial_dirs(self) -> list[int]:
        """Trial directories without ``trial.json`` (a driver died while writing them)."""
        removed = []
        if not self.trials_dir.exists():
            return removed
        self.check_not_link(self.trials_dir)
        for tdir in sorted(self.trials_dir.iterdir()):
            self.check_not_link(tdir)  # rmtree must never follow a link out of the run
            if tdir.is_dir() and not (tdir / TRIAL_JSON).exists():
                shutil.rmtree(tdir, ignore_errors=True)
                with contextlib.suppress(ValueError):
                    removed.append(int(tdir.name))
        return removed


def _trial_record(tdir: Path) -> TrialRecord:
    """The committed trial in ``tdir``; RunDirError when its ``trial.json`` is damaged,
    including a JSON object without the trial's number and state."""
    path = tdir / TRIAL_JSON
    info, digest = read_record(path, "trial.json")
    number, state = info.get("number"), info.get("state")
    if not isinstance(number, int) or isinstance(number, bool) or not isinstance(state, str):
        raise RunDirError(
            f"{path} is damaged (trial.json holds no trial number and state). "
            f"{_record_fix('trial.json')}"
        )
    return TrialRecord(tdir, info, digest)


def _record_fix(what: str) -> str:
    return "Fix: restore it from a copy of the run" + (
        ", or delete its trial directory to leave the trial out; `hpsearch run SPEC --resume` "
        "moves it aside and runs the trial again."
        if what == "trial.json"
        else "."
    )


def read_run_json(path: Path, what: str) -> Any:
    """A JSON file of the run directory; a damaged one is a RunDirError naming the file."""
    return read_record(path, what)[0]


def read_record(path: Path, what: str, data: bytes | None = None) -> tuple[dict[str, Any], str]:
    """(the object of a JSON file of the run directory, the SHA-256 of its bytes); ``data``:
    bytes already read (and checked) instead of the file. A damaged one is a RunDirError
    naming the file."""
    fix = _record_fix(what)
    try:
        if data is None:
            data = Path(path).read_bytes()
        info = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(
            f"{path} is damaged ({what} is not valid JSON: {str(exc)[:120]}). {fix}"
        ) from None
    if not isinstance(info, dict):
        raise RunDirError(
            f"{path} is damaged ({what} holds {type(info).__name__}, not an object). {fix}"
        )
    return info, atomic.sha256(data)


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_file(path: Path) -> None:
    """A study file that is empty or not SQLite is refused before Optuna opens it (opening
    would write a fresh schema into it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise RunDirError(
            f"{path}: cannot read the study storage ({exc}). Fix: check its permissions."
        ) from None
    problem = None
    if head != _SQLITE_HEADER:
        problem = "empty" if not head else "not an SQLite database"
    else:
        problem = _sqlite_problem(path)
    if problem:
        raise RunDirError(
            f"{path} is damaged ({problem}). Fix: "
            "restore the run's study.db from a copy of the run; hpsearch does not rebuild it."
        )


def _sqlite_problem(path: Path) -> str | None:
    """SQLite's ``quick_check`` of a study file, opened read-only (nothing is written): the
    first problem it finds, or None. A database that is busy (locked by a driver that is
    writing) is given the benefit of the doubt."""
    import sqlite3

    try:
        uri = f"file:{path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as con:
            rows = con.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.OperationalError:
        return None  # busy or locked: not a sign of damage
    except sqlite3.DatabaseError as exc:
        return f"SQLite: {exc}"
    first = " ".join(str(rows[0][0]).split()) if rows else "ok"
    return None if first == "ok" else f"SQLite: {first[:200]}"


def _history_csv(history: list[dict[str, float]]) -> str:
    keys: list[str] = []
    for row in history:
        for k in row:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buf.getvalue()


def dump_json(obj: Any) -> str:
    return json.dumps(obj, default=atomic._json_default)


def ensure_dir(path: Path) -> Path:
    os.makedirs(path, exist_ok=True)
    return path
