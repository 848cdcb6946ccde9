"""Runs whose ``output`` is a URI: the driver works on a staging copy and pushes the run
there; ``--resume``, ``hpsearch status`` and ``ensembles build`` read it back.

``file://`` URIs take the same pyarrow code path as ``s3://`` and ``gs://`` (one
upload per file, a listing to pull), so these tests cover the remote mode without
a bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ensembles import cli as ensembles_cli
from hpsearch.cli import app as hpsearch_cli
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.remote import (
    UNPUSHED,
    RemoteRun,
    RemoteSync,
    SyncError,
    default_staging,
    is_uri,
    markers_last,
)
from hpsearch.core.spec import load_spec
from hpsearch.core.store import FAULT_ENV
from hpsearch.search.driver import run_search
from tests.conftest import ROOT, make_spec_dict, write_spec

ORACLE = "hpsearch.search.testing:oracle"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Staging copies under the test's own directory, never in the user's cache."""
    monkeypatch.setenv("HPSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _study(run_dir: Path) -> optuna.Study:
    meta = json.loads((run_dir / "run.json").read_text())
    return optuna.load_study(
        study_name=meta["study_name"], storage=f"sqlite:///{run_dir / 'study.db'}"
    )


def _spec(tmp_path: Path, remote: Path, n_trials: int = 4, **overrides):
    return load_spec(
        make_spec_dict(
            tmp_path,
            output=remote.as_uri(),
            budget={"n_trials": n_trials},
            sampler={"name": "random", "seed": 0},
            **overrides,
        )
    )


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _assert_complete(remote: Path, n_trials: int) -> None:
    """The remote run alone is a complete run directory: every trial committed and told."""
    for name in ("run.json", "spec.yaml", "space.yaml", "data/split.json", "data/target.json"):
        assert (remote / name).is_file(), name
    meta = json.loads((remote / "run.json").read_text())
    assert meta["n_trials_done"] == n_trials
    study = _study(remote)
    assert len(study.trials) == n_trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        tdir = remote / "trials" / f"{t.number:05d}"
        info = json.loads((tdir / "trial.json").read_text())
        assert info["state"] == "COMPLETE" and info["value"] == t.value
        assert (tdir / "valid_pred.npy").is_file() and (tdir / "holdout_pred.npy").is_file()
    assert not [p for p in remote.rglob("*") if p.name.startswith(".")], "temporary files left"


@pytest.fixture(scope="module")
def remote_run(ray_session, tmp_path_factory):
    """A finished 4-trial search whose output is a file:// URI (and its staging copy)."""
    root = tmp_path_factory.mktemp("remote")
    remote = root / "bucket" / "runs" / "bc"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPSEARCH_CACHE", str(root / "cache"))
        spec = _spec(root, remote)
        summary = run_search(spec, trial_fn=ORACLE, progress=False)
        staging = default_staging(spec.output)
    assert summary.n_complete == 4
    return spec, remote, staging


# --------------------------------------------------------------------------- the search


def test_search_to_a_uri_writes_the_whole_run_there(remote_run):
    spec, remote, staging = remote_run
    assert spec.output == remote.as_uri()  # kept verbatim, not resolved as a path
    _assert_complete(remote, 4)
    assert json.loads((remote / "run.json").read_text())["storage"] is None
    assert load_spec(remote / "spec.yaml").output == spec.output
    # the staging copy was the driver's working directory: same files, plus its lock
    assert _files(remote).keys() <= _files(staging).keys()
    assert (staging.parent / f"{staging.name}.lock").read_text().startswith(spec.output)


def test_an_existing_remote_run_without_resume_is_refused(remote_run, tmp_path):
    spec, remote, _ = remote_run
    before = _files(remote)
    with pytest.raises(RunDirError) as err:
        run_search(spec, trial_fn=ORACLE, progress=False)
    message = str(err.value)
    assert f"run directory {spec.output} already holds run 'bc-test'" in message
    assert "Fix: add --resume" in message and "cache" not in message
    assert _files(remote) == before


def test_resume_from_the_uri_alone_runs_no_trial_twice(ray_session, tmp_path):
    remote = tmp_path / "bucket" / "run"
    spec = _spec(tmp_path, remote, n_trials=3)
    run_search(spec, trial_fn=ORACLE, progress=False)
    first = {p.parent.name: p.read_bytes() for p in remote.glob("trials/*/trial.json")}
    assert len(first) == 3
    shutil.rmtree(default_staging(spec.output))  # a new machine: only the remote run is left

    summary = run_search(spec, resume=True, n_trials=5, trial_fn=ORACLE, progress=False)
    assert summary.n_complete == 5
    _assert_complete(remote, 5)
    assert [t.number for t in _study(remote).trials] == [0, 1, 2, 3, 4]
    for name, data in first.items():  # committed trials are neither re-run nor rewritten
        assert (remote / "trials" / name / "trial.json").read_bytes() == data


@pytest.mark.slow
def test_driver_killed_after_a_commit_resumes_from_the_remote(ray_session, tmp_path):
    """SIGKILL after trial 2's trial.json was pushed but before the study was told: the
    remote study holds trial 2 RUNNING (it is pushed before trial.json), so a resume on
    another machine settles it from its file."""
    remote = tmp_path / "bucket" / "run"
    spec_path = write_spec(
        tmp_path,
        output=remote.as_uri(),
        budget={"n_trials": 5},
        resources={"max_concurrent": 1},
        sampler={"name": "random", "seed": 0},
    )
    cmd = [sys.executable, "-m", "hpsearch.cli.app", "run", str(spec_path), "--quiet"]
    cmd += ["--address", ray_session, "--trial-fn", ORACLE]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, timeout=180,
        env={**os.environ, FAULT_ENV: "kill_after_commit:2"},
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (remote / "trials" / "00002" / "trial.json").is_file()
    assert _study(remote).trials[2].state == optuna.trial.TrialState.RUNNING
    committed = json.loads((remote / "trials" / "00002" / "trial.json").read_text())
    shutil.rmtree(default_staging(remote.as_uri()))

    summary = run_search(load_spec(spec_path), resume=True, trial_fn=ORACLE, progress=False)
    assert summary.n_complete == 5
    _assert_complete(remote, 5)
    assert _study(remote).trials[2].value == committed["value"]


# --------------------------------------------------------------------------- readers


def test_ensembles_build_and_list_read_and_write_the_uri(remote_run, tmp_path, capsys):
    _, source, _ = remote_run
    remote = tmp_path / "copy"
    shutil.copytree(source, remote)
    uri = remote.as_uri()
    before = _files(remote)

    args = ["build", uri, "--trees", "rf", "--method", "mean", "--folds", "2", "--name", "e1"]
    assert ensembles_cli.main([*args, "--quiet"]) == 0
    assert f"{uri}/ensembles/e1" in capsys.readouterr().out
    ens = remote / "ensembles" / "e1"
    info = json.loads((ens / "ensemble.json").read_text())
    assert info["runs"] == [uri] and info["runs_relative"] == ["../.."]
    assert (ens / "holdout_pred.npy").is_file() and (ens / "report.md").is_file()
    assert (remote / "trees" / "rf" / "tree.json").is_file()
    assert (remote / "trees" / "rf" / "model.joblib").is_file()
    after = _files(remote)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing else touched

    assert ensembles_cli.main(["list", uri]) == 0
    assert "e1" in capsys.readouterr().out
    # a second build reuses the pushed tree and refuses a taken name
    assert ensembles_cli.main([*args, "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_status_trials_and_best_read_the_uri(remote_run, capsys):
    _, remote, _ = remote_run
    uri = remote.as_uri()
    assert hpsearch_cli.main(["status", uri]) == 0
    out = capsys.readouterr().out
    assert f"run: bc-test  ({uri})" in out and "COMPLETE 4" in out
    assert hpsearch_cli.main(["trials", uri, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4
    assert hpsearch_cli.main(["best", uri]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["model"].startswith(f"{uri}/trials/")


# --------------------------------------------------------------------------- errors


def test_a_scheme_no_filesystem_knows_exits_2(tmp_path, capsys):
    spec_path = write_spec(tmp_path, output="nosuchfs://bucket/run")
    assert hpsearch_cli.main(["run", str(spec_path), "--trial-fn", ORACLE]) == 2
    err = capsys.readouterr().err
    assert "error: cannot open 'nosuchfs://bucket/run': no filesystem for nosuchfs://" in err
    assert "Fix: use a local path, file:///absolute/path, s3://bucket/path" in err
    assert not (tmp_path / "cache").exists()
    assert hpsearch_cli.main(["status", "nosuchfs://bucket/run"]) == 2
    assert ensembles_cli.main(["build", "nosuchfs://bucket/run"]) == 2


def test_a_uri_holding_something_else_is_refused(tmp_path):
    remote = tmp_path / "bucket" / "run"
    remote.mkdir(parents=True)
    (remote / "notes.txt").write_text("not a run")
    with pytest.raises(RunDirError, match="exists, is not empty and holds no run"):
        run_search(_spec(tmp_path, remote), trial_fn=ORACLE, progress=False)
    assert [p.name for p in remote.iterdir()] == ["notes.txt"]


def test_a_uri_that_is_no_run_is_refused_by_readers(tmp_path, capsys):
    uri = (tmp_path / "nothing").as_uri()
    assert hpsearch_cli.main(["status", uri]) == 2
    assert f"{uri} is not a run directory (no run.json)" in capsys.readouterr().err


# --------------------------------------------------------------------------- the layer


def test_is_uri():
    for text in ("s3://bucket/runs/x", "gs://b", "file:///tmp/run", "hdfs://host:8020/r"):
        assert is_uri(text), text
    for text in ("/tmp/run", "runs/x", "C:\\runs\\x", "", "sqlite:/x", None):
        assert not is_uri(text), text


def test_markers_go_last_deepest_first():
    rels = ["run.json", "data/split.json", "data/target.json", "trials/00001/trial.json",
            "trials/00001/tb/events", "trials/00001/valid_pred.npy", "spec.yaml"]  # fmt: skip
    order = markers_last(rels)
    assert order[-3:] == ["trials/00001/trial.json", "data/split.json", "run.json"]
    assert set(order[:-3]) == set(rels) - set(order[-3:])


def _staged_trial(root: Path) -> RemoteRun:
    local = root / "local"
    tdir = local / "trials" / "00000"
    (tdir / "tb").mkdir(parents=True)
    for name in ("valid_pred.npy", "holdout_pred.npy", "tb/events", "trial.json"):
        (tdir / name).write_bytes(name.encode())
    (local / ".lock").write_text("pid 1")
    with sqlite3.connect(local / "study.db") as db:
        db.execute("CREATE TABLE trials (number INTEGER)")
    return RemoteRun((root / "remote").as_uri(), local=local)


def test_a_trial_is_pushed_files_then_study_then_trial_json(tmp_path):
    remote = _staged_trial(tmp_path)
    order: list[str] = []
    upload = remote._upload
    remote._upload = lambda src, rel: (order.append(rel), upload(src, rel))
    RemoteSync(remote, sqlite=True).trial_written(0)
    assert order[-2:] == ["study.db", "trials/00000/trial.json"]
    assert set(order[:-2]) == {
        "trials/00000/valid_pred.npy", "trials/00000/holdout_pred.npy", "trials/00000/tb/events",
    }  # fmt: skip
    pushed = tmp_path / "remote"
    assert (pushed / "trials/00000/tb/events").read_bytes() == b"tb/events"
    with sqlite3.connect(pushed / "study.db") as db:  # a snapshot SQLite opens
        assert db.execute("SELECT count(*) FROM trials").fetchone() == (0,)
    assert not (pushed / ".lock").exists()


def test_failed_pushes_are_kept_in_order_and_retried(tmp_path):
    remote = _staged_trial(tmp_path)
    warnings: list[str] = []
    sync = RemoteSync(remote, sqlite=True, warn=warnings.append)
    upload = remote._upload
    remote._upload = lambda src, rel: (_ for _ in ()).throw(OSError("network is unreachable"))
    sync.trial_written(0)
    assert len(sync.pending) == 5 and sync.pending[-1] == "trials/00000/trial.json"
    assert (remote.local / UNPUSHED).exists()
    assert len(warnings) == 1 and "network is unreachable" in warnings[0]
    with pytest.raises(SyncError, match="could not be pushed to file://") as err:
        sync.finished()
    assert str(remote.local) in str(err.value) and "--resume" in str(err.value)
    assert len(warnings) == 1  # one warning per outage, not per attempt

    remote._upload = upload
    (remote.local / "run.json").write_text("{}")
    sync.finished()
    assert sync.pending == [] and not (remote.local / UNPUSHED).exists()
    assert "works again" in warnings[-1]
    assert (tmp_path / "remote" / "trials/00000/trial.json").is_file()


def test_pull_replaces_the_copy_and_skips_hidden_and_excluded_files(tmp_path):
    src = tmp_path / "remote"
    for name in ("run.json", "trials/00000/trial.json", "trials/00000/model.keras",
                 "ensembles/.e1.tmp-1/x", ".lock"):  # fmt: skip
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(name)
    local = tmp_path / "local"
    (local / "stale").mkdir(parents=True)
    remote = RemoteRun(src.as_uri(), local=local)
    assert remote.pull(exclude=("trials/*/model.keras",)) == 2
    assert sorted(_files(local)) == ["run.json", "trials/00000/trial.json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unpushed_files_are_pushed_by_resume_only(tmp_path):
    remote = _staged_trial(tmp_path)
    (remote.local / "run.json").write_text("{}")
    (remote.local / UNPUSHED).touch()
    with pytest.raises(RunDirError, match="never pushed there"):
        remote.stage(resume=False)
    remote.stage(resume=True)
    assert not (remote.local / UNPUSHED).exists()
    pushed = _files(tmp_path / "remote")
    assert {"run.json", "study.db", "trials/00000/trial.json"} <= pushed.keys()


def test_bad_scheme_is_a_user_error():
    with pytest.raises(UserError, match="no filesystem for nosuchfs://"):
        RemoteRun("nosuchfs://x")


def test_a_submitted_job_keeps_its_inputs_in_the_run_at_the_uri(tmp_path):
    """The job's last step (``hpsearch.cluster.jobs.keep_inputs``) edits the driver's staging copy
    on the head node and pushes ``inputs/`` and the rewritten ``spec.yaml``."""
    from hpsearch.cluster import jobs

    train = tmp_path / "train.csv"
    train.write_text("a,target\n1,0\n2,1\n3,0\n4,1\n")
    remote = tmp_path / "bucket" / "run"
    spec_path = write_spec(tmp_path, output=remote.as_uri(), data={"train": str(train)})
    job = tmp_path / "job"
    job.mkdir()
    staged = jobs.stage(spec_path, job)
    assert staged.output == remote.as_uri()
    assert yaml.safe_load((job / "spec.yaml").read_text())["output"] == remote.as_uri()

    staging = default_staging(remote.as_uri())  # what the job's driver left on the head node
    staging.mkdir(parents=True)
    frozen = yaml.safe_load((job / "spec.yaml").read_text())
    frozen["data"]["train"] = str(job / frozen["data"]["train"])
    (staging / "spec.yaml").write_text(yaml.safe_dump(frozen))
    assert jobs.keep_inputs(job / "spec.yaml") == ["data.train"]
    assert (remote / "inputs/data/train/train.csv").read_text() == train.read_text()
    pushed = yaml.safe_load((remote / "spec.yaml").read_text())
    assert pushed["data"]["train"] == "inputs/data/train/train.csv"
    assert pushed["output"] == remote.as_uri()
