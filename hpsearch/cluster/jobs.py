"""Searches on a running Ray cluster: submit them as Ray Jobs, follow, list and stop them,
and bring a finished run directory home.

A submission is a Ray Job whose runtime environment carries everything the
search needs from this machine:

- ``working_dir``: a staging directory with ``spec.yaml`` and the local data
  files the spec names (``data.train``, ``data.test``,
  ``data.sample_submission``; also a space file), rewritten to paths relative to
  the staging directory;
- ``py_modules``: the packages ``search_spaces``, ``hpsearch`` and ``ensembles``
  from this checkout, so the cluster needs only the dependencies installed.

The entrypoint (``python -m hpsearch.cli.job_entry spec.yaml --address auto ...``) runs
``hpsearch run`` on the cluster, then copies the uploaded data into
``RUN_DIR/inputs/`` and points the run's ``spec.yaml`` at it, so the run
directory stays usable (``ensembles build``) after the job's working directory is
gone and after ``hpsearch pull`` copied it elsewhere.

The run directory is the spec's ``output``: a path resolved on the submitting
machine, which the job's driver (on the head node) must be able to write (the
same machine for ``cluster/local.sh``, a shared filesystem mounted at the same
path on a real cluster), or a URI (``s3://``, ``gs://``) that the driver pushes
the run to (``hpsearch.core.remote``). ``hpsearch pull`` copies a run from a path or
URI.

Token authentication: when the cluster has Ray token authentication on, the
token comes from ``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``
or ``~/.ray/auth_token`` (Ray's own order) and is sent as a bearer token.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hpsearch.core.errors import UserError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
ADDRESS_ENV = ("HPSEARCH_ADDRESS", "RAY_API_SERVER_ADDRESS")
STAGED_SPEC = "spec.yaml"
INPUTS_DIR = "inputs"
DATA_FIELDS = ("train", "test", "sample_submission")
PACKAGES = ("search_spaces", "hpsearch", "ensembles")
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# seconds a stopped job's driver gets (after SIGTERM) to cancel and record the trials in
# flight before Ray kills it; read by the job's supervisor from the job's env_vars
STOP_GRACE_S = 20
LOCAL_FIX = "start one with `cluster/local.sh up`, or check --address"
TOKEN_FIX = (
    "set RAY_AUTH_TOKEN to the cluster's token, point RAY_AUTH_TOKEN_PATH at a file holding it, "
    "or write it to ~/.ray/auth_token (`ray get-auth-token` prints it on the head node)"
)


class JobError(UserError):
    """The cluster refused or does not know a request (bad address, token, job id)."""


# --------------------------------------------------------------------------- connection


def default_address() -> str:
    """``--address`` when none is given: $HPSEARCH_ADDRESS, $RAY_API_SERVER_ADDRESS, or local."""
    for name in ADDRESS_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return DEFAULT_ADDRESS


def normalise_address(address: str) -> str:
    """``HEAD:8265`` -> ``http://HEAD:8265``; the Jobs API speaks HTTP(S) to the dashboard."""
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = "http://" + address
    scheme = urlparse(address).scheme
    if scheme not in ("http", "https"):
        raise JobError(
            f"--address {address!r}: the Jobs API needs the dashboard's HTTP address, "
            f"such as http://HEAD:8265 (got a {scheme}:// address). "
            "Fix: pass the dashboard URL, not the GCS (port 6379) or Ray Client (ray://) one."
        )
    return address


def auth_token() -> tuple[str, str] | None:
    """The Ray auth token and where it came from, in Ray's order; None when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    path_env = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path_env:
        path = Path(path_env).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise JobError(
                f"RAY_AUTH_TOKEN_PATH={path_env!r} cannot be read ({exc.strerror}). "
                "Fix: point it at the file holding the cluster's token, or unset it."
            ) from None
        if not token:
            raise JobError(f"RAY_AUTH_TOKEN_PATH={path_env!r} is empty. Fix: {TOKEN_FIX}.")
        return token, f"RAY_AUTH_TOKEN_PATH ({path})"
    path = Path.home() / ".ray" / "auth_token"
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return (token, str(path)) if token else None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    parsed = urlparse(address)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            pass
    except OSError as exc:
        raise JobError(
            f"cannot reach the Ray dashboard at {address} ({exc.strerror or exc}). "
            f"Fix: {LOCAL_FIX} (the dashboard's address, e.g. http://HEAD:8265)."
        ) from None


def _auth_error(address: str, token: tuple[str, str] | None, detail: str) -> JobError:
    if token is None:
        what = "the cluster requires a token and none was found"
    else:
        what = f"the cluster rejected the token from {token[1]}"
    return JobError(
        f"authentication failed at the Ray dashboard at {address}: {what} ({detail}). "
        f"Fix: {TOKEN_FIX}."
    )


def connect(address: str | None) -> Any:
    """A ``JobSubmissionClient`` for the dashboard at ``address``; JobError when it cannot."""
    import logging

    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    # no per-package upload and websocket chatter (these loggers set INFO themselves)
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)

    address = normalise_address(address or default_address())
    _check_reachable(address)
    token = auth_token()
    headers = {"Authorization": f"Bearer {token[0]}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as exc:
        raise _auth_error(address, token, str(exc).splitlines()[0]) from None
    except ConnectionError:
        raise JobError(f"cannot reach the Ray dashboard at {address}. Fix: {LOCAL_FIX}.") from None
    except RuntimeError as exc:  # a web server that is not a Ray dashboard, or an old Ray
        raise JobError(
            f"{address} does not answer like a Ray dashboard with the Jobs API ({exc}). "
            f"Fix: {LOCAL_FIX}."
        ) from None


def _call(client: Any, what: str, fn: Callable[[], Any], job_id: str | None = None) -> Any:
    """Run one Jobs API request, turning the SDK's errors into messages that say the fix."""
    from ray.exceptions import AuthenticationError

    try:
        return fn()
    except AuthenticationError as exc:
        raise _auth_error(client.get_address(), auth_token(), str(exc).splitlines()[0]) from None
    except ConnectionError:
        raise JobError(
            f"lost the Ray dashboard at {client.get_address()} while trying to {what}. "
            f"Fix: {LOCAL_FIX}."
        ) from None
    except RuntimeError as exc:
        text = str(exc)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise JobError(
                f"no job {job_id!r} at {client.get_address()}. "
                f"Fix: list the jobs with `hpsearch jobs --address {client.get_address()}`."
            ) from None
        raise JobError(f"could not {what} at {client.get_address()}: {text}") from None


# --------------------------------------------------------------------------- staging


@dataclass
class Staged:
    """A staging directory ready to be the job's ``working_dir``."""

    path: Path
    spec_name: str
    output: str
    uploaded: dict[str, str]  # spec field -> original file
    upload_bytes: int


def _package_dirs() -> list[str]:
    import importlib.util

    dirs = []
    for name in PACKAGES:
        found = importlib.util.find_spec(name)
        if found is not None and found.submodule_search_locations:
            dirs.append(str(Path(next(iter(found.submodule_search_locations))).resolve()))
    return dirs


def stage(
    spec_path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    output: str | None = None,
    data_on_cluster: bool = False,
) -> Staged:
    """Write ``dest/spec.yaml`` (validated, output absolute) and copy the local files it names.

    Args:
        spec_path: the spec file on this machine.
        dest: an empty staging directory.
        output: run directory as the cluster sees it (default: the spec's own
            ``output``, resolved on this machine).
        data_on_cluster: keep data paths as they are (absolute) instead of
            uploading the files: they are already readable on the cluster.
    """
    import yaml

    from hpsearch.core.spec import load_spec

    overrides = {"output": output} if output else None
    spec = load_spec(spec_path, overrides=overrides)
    raw = spec.to_dict()
    dest = Path(dest)
    uploaded: dict[str, str] = {}
    size = 0
    if not data_on_cluster:
        files = {
            fld: Path(raw["data"][fld])
            for fld in DATA_FIELDS
            if raw["data"].get(fld) and not raw["data"][fld].startswith("sklearn:")
        }
        size = sum(src.stat().st_size for src in files.values())
        if size > MAX_UPLOAD_BYTES:
            raise JobError(
                f"spec {spec_path}: the data files add up to {size / 2**20:.0f} MiB, more than "
                f"the {MAX_UPLOAD_BYTES // 2**20} MiB a job upload should carry. Fix: put the data "
                "on a filesystem the cluster reads (NFS, EFS, GCS FUSE), point the spec at it, "
                "and submit with --data-on-cluster."
            )
        for fld, src in files.items():
            rel = Path("data") / fld / src.name
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
            raw["data"][fld] = rel.as_posix()
            uploaded[f"data.{fld}"] = str(src)
    space = raw.get("space", "")
    if space.endswith((".yaml", ".yml")) and Path(space).is_file():
        rel = Path("space") / Path(space).name
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(space, dest / rel)
        raw["space"] = rel.as_posix()
        uploaded["space"] = space
    (dest / STAGED_SPEC).write_text(yaml.safe_dump(raw, sort_keys=False))
    return Staged(dest, spec.name, spec.output, uploaded, size)


def runtime_env(staging: Path) -> dict[str, Any]:
    """The job's runtime environment: the staging dir plus this checkout's packages."""
    return {
        "working_dir": str(staging),
        "py_modules": _package_dirs(),
        "excludes": ["__pycache__", "*.pyc"],
        # only keys that ensure_ray() does not set: Ray refuses to merge a job's and a
        # driver's env_vars that share a key
        "env_vars": {
            "PYTHONUNBUFFERED": "1",
            # `hpsearch stop` interrupts the driver like Ctrl-C (ray.init turns SIGTERM into
            # an abrupt exit), so trials in flight are cancelled, recorded and re-queued
            "RAY_JOB_STOP_SIGNAL": "SIGINT",
            "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S),
        },
    }


def entrypoint(
    n_trials: int | None = None, resume: bool = False, trial_options: Iterable[str] = ()
) -> str:
    """The job's shell command: ``hpsearch run`` of the staged spec on the cluster."""
    import shlex

    parts = ["python", "-m", "hpsearch.cli.job_entry", STAGED_SPEC, "--address", "auto"]
    if n_trials is not None:
        parts += ["--n-trials", str(int(n_trials))]
    if resume:
        parts.append("--resume")
    for option in trial_options:
        parts += ["--trial-option", option]
    return " ".join(shlex.quote(p) for p in parts)


# --------------------------------------------------------------------------- commands


@dataclass
class Submitted:
    job_id: str
    address: str
    spec_name: str
    output: str
    uploaded: dict[str, str]


def submit(
    spec_path: str | os.PathLike,
    *,
    address: str | None = None,
    n_trials: int | None = None,
    resume: bool = False,
    output: str | None = None,
    data_on_cluster: bool = False,
    trial_options: Iterable[str] = (),
    client: Any = None,
) -> Submitted:
    """Submit the search of ``spec_path`` as a Ray Job; returns once the cluster accepted it."""
    if n_trials is not None and n_trials < 1:
        raise UserError(
            f"--n-trials {n_trials}: must be at least 1. Fix: give the number of trials to "
            "run, for example --n-trials 20, or leave it out to use `budget.n_trials`."
        )
    with tempfile.TemporaryDirectory(prefix="hpsearch-job-") as tmp:
        staged = stage(spec_path, tmp, output=output, data_on_cluster=data_on_cluster)
        client = client or connect(address)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        submission_id = f"hpsearch-{staged.spec_name}-{stamp}-{secrets.token_hex(2)}"
        job_id = _call(
            client,
            "submit the job",
            lambda: client.submit_job(
                entrypoint=entrypoint(n_trials, resume, trial_options),
                submission_id=submission_id,
                runtime_env=runtime_env(staged.path),
                metadata={"hpsearch_spec": staged.spec_name, "hpsearch_output": staged.output},
            ),
        )
    return Submitted(job_id, client.get_address(), staged.spec_name, staged.output, staged.uploaded)


def status(client: Any, job_id: str) -> str:
    return str(_call(client, "read the job status", lambda: client.get_job_status(job_id), job_id))


def logs(client: Any, job_id: str) -> str:
    return _call(client, "read the job logs", lambda: client.get_job_logs(job_id), job_id)


def follow(
    client: Any, job_id: str, write: Callable[[str], Any] | None = None, poll_s: float = 1.0
) -> str:
    """Stream the job's logs (to stdout by default) until it ends; returns its final status."""
    import asyncio

    status(client, job_id)  # a clear error for an unknown id before streaming

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            if write is None:
                print(chunk, end="", flush=True)
            else:
                write(chunk)

    # a log stream that breaks off (dashboard restart, proxy timeout) ends in polling
    with contextlib.suppress(Exception):
        asyncio.run(tail())
    while (state := status(client, job_id)) not in TERMINAL:
        time.sleep(poll_s)
    return state


def stop(client: Any, job_id: str, wait_s: float = 30.0) -> tuple[bool, str]:
    """Ask the job to stop; returns (was running, status once it ended or ``wait_s`` passed)."""
    was_running = bool(_call(client, "stop the job", lambda: client.stop_job(job_id), job_id))
    deadline = time.time() + wait_s
    state = status(client, job_id)
    while state not in TERMINAL and time.time() < deadline:
        time.sleep(0.5)
        state = status(client, job_id)
    return was_running, state


def list_jobs(client: Any) -> list[dict[str, Any]]:
    """The cluster's submitted jobs, oldest first, as plain rows."""
    rows = []
    for job in _call(client, "list the jobs", client.list_jobs):
        meta = job.metadata or {}
        rows.append(
            {
                "id": job.submission_id or job.job_id,
                "status": str(job.status),
                "start_time": job.start_time,
                "end_time": job.end_time,
                "spec": meta.get("hpsearch_spec"),
                "output": meta.get("hpsearch_output"),
                "entrypoint": job.entrypoint,
                "message": job.message,
                "type": str(getattr(job, "type", "")),
            }
        )
    rows.sort(key=lambda r: r["start_time"] or 0)
    return rows


def format_time(ms: int | None) -> str:
    if not ms:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def jobs_table(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    if not rows:
        return "no jobs"
    cells = [("JOB ID", "STATUS", "STARTED", "SPEC / ENTRYPOINT")]
    for r in rows:
        what = r["spec"] or r["entrypoint"] or "-"
        if len(what) > 60:
            what = what[:57] + "..."
        cells.append((r["id"], r["status"].split(".")[-1], format_time(r["start_time"]), what))
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in cells
    )


# --------------------------------------------------------------------------- pull


def _source_fs(uri: str) -> tuple[Any, str]:
    from pyarrow import fs

    if "://" in uri:
        from hpsearch.core.remote import open_filesystem

        return open_filesystem(uri)  # pyarrow's filesystems, then fsspec's: as run output
    return fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def pull(run_uri: str, dest: str | os.PathLike) -> tuple[Path, int, int]:
    """Copy the run directory at ``run_uri`` (path or URI) into the local ``dest``.

    ``dest`` must not exist or be empty; files land in a temporary sibling first and are
    renamed into place, so an interrupted pull leaves no half run behind.

    Returns:
        (dest, number of files, bytes copied)
    """
    from pyarrow import fs

    src_fs, src = _source_fs(run_uri)
    info = src_fs.get_file_info(src)
    if info.type == fs.FileType.NotFound:
        raise UserError(f"{run_uri}: no such run directory. Fix: check the path or URI.")
    if info.type != fs.FileType.Directory:
        raise UserError(f"{run_uri} is a file, not a run directory. Fix: give the run's folder.")
    if src_fs.get_file_info(f"{src.rstrip('/')}/run.json").type != fs.FileType.File:
        raise UserError(
            f"{run_uri} is not a run directory (no run.json). "
            "Fix: give the `output` directory of a search."
        )
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(
            f"destination {dest} exists and is not empty; pull never overwrites files. "
            "Fix: choose a new destination, or remove it first."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        fs.copy_files(src, str(partial), source_filesystem=src_fs,
                      destination_filesystem=fs.LocalFileSystem())  # fmt: skip
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    files = [p for p in dest.rglob("*") if p.is_file()]
    return dest, len(files), sum(p.stat().st_size for p in files)


# --------------------------------------------------------------------------- job side


def keep_inputs(spec_path: str | os.PathLike) -> list[str]:
    """Copy the uploaded files of a staged spec into ``RUN_DIR/inputs/`` and point the run's
    ``spec.yaml`` at them (relative paths), so the run outlives the job's working dir.

    Runs on the cluster after ``hpsearch run``; a no-op for a spec without uploaded files
    or when the run directory was never created. Returns the fields it moved.
    """
    import yaml

    from hpsearch.core import atomic
    from hpsearch.core.remote import RemoteRun, is_uri
    from search_spaces import safe_yaml

    staged_spec = Path(spec_path).resolve()
    # the project's YAML loader (aliases that expand, duplicate keys refused), as every
    # other reader of a spec file
    staged = safe_yaml.load(staged_spec.read_text(encoding="utf-8"))
    # a run at a URI: the driver's staging copy on this node, pushed again below
    remote = RemoteRun(staged["output"]) if is_uri(staged["output"]) else None
    run_dir = remote.local if remote else Path(staged["output"])
    frozen = run_dir / "spec.yaml"
    if not frozen.is_file():
        return []
    base = staged_spec.parent
    current = safe_yaml.load(frozen.read_text(encoding="utf-8"))
    moved = []
    fields = [("data", f) for f in DATA_FIELDS] + [(None, "space")]
    for section, fld in fields:
        value = staged.get(section, {}).get(fld) if section else staged.get(fld)
        if not isinstance(value, str) or value.startswith("sklearn:") or Path(value).is_absolute():
            continue
        if section is None and not value.endswith((".yaml", ".yml")):
            continue  # a library space name, not a file
        src = base / value
        if not src.is_file():
            continue
        # only the run this job created points at the job's own staged files: a run that
        # refused the job (another spec's, or a busy one) is left exactly as it was
        stored = current.get(section, {}).get(fld) if section else current.get(fld)
        if stored != str(src.resolve()):
            continue
        rel = Path(INPUTS_DIR) / value
        target = run_dir / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic.copy_file(src, target)
        if section:
            current[section][fld] = rel.as_posix()
        else:
            current[fld] = rel.as_posix()
        moved.append(f"{section}.{fld}" if section else fld)
    if moved:
        atomic.write_text(frozen, yaml.safe_dump(current, sort_keys=False))
        if remote is not None:
            remote.push_tree(INPUTS_DIR)
            remote.push(["spec.yaml"])
    return moved
