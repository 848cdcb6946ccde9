"""Fault drills: the service broken on purpose.

The driver is SIGKILLed at exact points of its write order (``HPSEARCH_FAULT``,
see ``hpsearch.core.store.fault_point``) and resumed; a Ray worker kills itself
mid-trial; trials fail in every way a trial can; two ensemble builds race for
one name; and bad input of every kind is refused with exit status 2, a message
that names the problem and the fix, and the run directory untouched.
docs/faults.md lists every drill with its outcome.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from hpsearch.cli.app import main
from hpsearch.core.spec import load_spec
from hpsearch.core.store import FAULT_ENV, RunDir
from hpsearch.search.driver import run_search
from tests import test_cv as _cv  # its drill counts among FAULT_DRILLS
from tests.conftest import ROOT, make_spec_dict, write_spec

ORACLE = "hpsearch.search.testing:oracle"
INSTANT = "hpsearch.search.testing:instant"
CRASH = "hpsearch.search.testing:crash_worker"
Snapshot = dict[str, tuple[int, int]] | None


# --------------------------------------------------------------------------- helpers


def _study(run_dir: Path) -> optuna.Study:
    rd = RunDir(run_dir)
    meta = rd.read_meta()
    return optuna.load_study(study_name=meta["study_name"], storage=rd.storage_url())


def _running(run_dir: Path) -> int:
    """RUNNING trials of a study another process is writing, read without ever writing
    (opening it with Optuna could race the driver creating its tables)."""
    db = run_dir / "study.db"
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:  # tables not created yet
        return 0


def _snapshot(path: Path) -> Snapshot:
    """Every file and folder under ``path`` with its size and mtime; None when absent."""
    if not path.exists():
        return None
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(path))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


def _driver(spec_path: Path, address: str, *args: str, env: dict[str, str] | None = None):
    cmd = [sys.executable, "-m", "hpsearch.cli.app", "run", str(spec_path), "--quiet"]
    cmd += ["--address", address, *args]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def _ensembles(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ensembles.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _oracle_run(root: Path, n_trials: int = 4, **overrides: Any) -> Path:
    spec = load_spec(
        make_spec_dict(
            root, budget={"n_trials": n_trials}, sampler={"name": "random", "seed": 0}, **overrides
        )
    )
    summary = run_search(spec, trial_fn=ORACLE, progress=False)
    assert summary.n_complete == n_trials
    return Path(spec.output)


def _assert_consistent(run_dir: Path, n_trials: int) -> None:
    """No trial lost or counted twice; study and files agree; every file loads."""
    rd = RunDir(run_dir)
    study = _study(run_dir)
    states = {t.number: t.state for t in study.trials}
    left = [n for n, s in states.items() if s in (optuna.trial.TrialState.RUNNING,)]
    assert left == [], f"trials left RUNNING after resume: {left}"
    assert not [n for n, s in states.items() if s == optuna.trial.TrialState.WAITING]
    dirs = sorted(p.name for p in rd.trials_dir.iterdir())
    assert all((rd.trials_dir / d / "trial.json").is_file() for d in dirs), dirs
    assert not list(rd.trials_dir.rglob("*.tmp")), "temporary files left behind"
    complete = rd.trials("COMPLETE")
    told = sorted(n for n, s in states.items() if s == optuna.trial.TrialState.COMPLETE)
    assert sorted(r.number for r in complete) == told
    assert len(complete) == n_trials
    meta = rd.read_meta()
    n_valid = len(json.loads((rd.data_dir / "split.json").read_text())["ids"]["valid"])
    for rec in complete:
        assert rec.value == study.trials[rec.number].value
        assert rec.predictions("valid").shape == (n_valid,)
        assert rec.predictions("holdout").ndim == 1
        for name in rec.info["files"]:
            if name.endswith(".npy"):
                np.load(rec.path / name, allow_pickle=False)
    assert meta["n_trials_done"] == n_trials


# --------------------------------------------------------------------------- driver killed


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault", ["during_trial", "kill_after_files:3", "kill_after_commit:3", "kill_after_trial:3"]
)
def test_driver_sigkill_then_resume_loses_and_duplicates_nothing(ray_session, tmp_path, fault):
    spec_path = write_spec(
        tmp_path,
        budget={"n_trials": 6},
        resources={"max_concurrent": 2},
        sampler={"name": "tpe", "seed": 0},
    )
    run_dir = tmp_path / "run"
    if fault == "during_trial":
        proc = _driver(spec_path, ray_session, "--trial-fn", ORACLE, "--trial-option",
                       "fake_sleep_s=2.0")  # fmt: skip
        deadline = time.time() + 300
        # kill once two trials are committed and the study shows one running: a condition,
        # not a guess at how long the driver takes between two trials
        while not (len(list(run_dir.glob("trials/*/trial.json"))) >= 2 and _running(run_dir)):
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.time() < deadline, "no trial ran after the first two in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    else:
        proc = _driver(spec_path, ray_session, "--trial-fn", ORACLE, "--trial-option",
                       "fake_sleep_s=0.3", env={FAULT_ENV: fault})  # fmt: skip
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]

    before = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("trials/*/trial.json")}
    study = _study(run_dir)
    running = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    trial3 = run_dir / "trials" / "00003"
    if fault == "during_trial":
        assert running, "the driver was not killed while a trial ran"
    elif fault.startswith("kill_after_files"):
        assert (trial3 / "valid_pred.npy").is_file() and not (trial3 / "trial.json").exists()
        assert 3 in running
    elif fault.startswith("kill_after_commit"):
        assert (trial3 / "trial.json").is_file() and 3 in running
    else:
        assert study.trials[3].state == optuna.trial.TrialState.COMPLETE

    summary = run_search(load_spec(spec_path), resume=True, trial_fn=ORACLE, progress=False)
    assert summary.n_complete == 6 and summary.n_failed == 0
    _assert_consistent(run_dir, 6)
    after = {r.path.name: r.info for r in RunDir(run_dir).trials()}
    for name, info in before.items():  # committed trials are neither lost nor rewritten
        assert after[name] == info
    study = _study(run_dir)
    if fault.startswith("kill_after_files"):
        # the half-written trial was discarded and its parameters ran again under a new number
        assert study.trials[3].user_attrs.get("requeued")
        again = [t for t in study.trials if t.user_attrs.get("requeued_from") == 3]
        assert len(again) == 1 and again[0].state == optuna.trial.TrialState.COMPLETE
        assert again[0].params == study.trials[3].params
    if fault.startswith("kill_after_commit"):
        # trial.json was written but the study never told: resume told it from the file
        assert study.trials[3].state == optuna.trial.TrialState.COMPLETE
        assert study.trials[3].value == before["00003"]["value"]


@pytest.mark.slow
def test_driver_killed_during_setup_is_refused_then_resumed(ray_session, tmp_path, capsys):
    spec_path = write_spec(tmp_path, budget={"n_trials": 2})
    run_dir = tmp_path / "run"
    proc = _driver(spec_path, ray_session, "--trial-fn", INSTANT,
                   env={FAULT_ENV: "kill_during_setup:0"})  # fmt: skip
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    assert (run_dir / "data" / "split.json").is_file() and not (run_dir / "run.json").exists()
    before = _snapshot(run_dir)

    assert main(["run", str(spec_path), "--quiet", "--trial-fn", INSTANT]) == 2
    assert capsys.readouterr().err == (
        f"error: output directory {run_dir} holds the set-up of a run that was interrupted "
        "before its first trial (no run.json). Fix: add --resume to set it up again, or choose "
        "a new `output` directory.\n"
    )
    assert _snapshot(run_dir) == before

    summary = run_search(load_spec(spec_path), resume=True, trial_fn=ORACLE, progress=False)
    assert summary.n_complete == 2
    _assert_consistent(run_dir, 2)


@pytest.mark.slow
def test_a_second_driver_on_a_busy_run_is_refused(ray_session, tmp_path, capsys):
    spec_path = write_spec(tmp_path, budget={"n_trials": 2}, resources={"max_concurrent": 2})
    run_dir = tmp_path / "run"
    proc = _driver(spec_path, ray_session, "--trial-fn", ORACLE, "--trial-option",
                   "fake_sleep_s=4")  # fmt: skip
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.time() < deadline, "the first driver started no trial"
        if _running(run_dir) == 2:
            break
        time.sleep(0.1)

    argv = ["run", str(spec_path), "--quiet", "--trial-fn", ORACLE, "--resume"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: run directory {run_dir} is in use by another hpsearch driver (pid {proc.pid} "
        f"on {socket.gethostname()}). Fix: wait for it to finish or stop it, then run again "
        "(with --resume to continue the run).\n"
    )
    assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()[-2000:]
    # the refused driver neither re-queued nor touched the running trials
    study = _study(run_dir)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert not [t for t in study.trials if t.user_attrs.get("requeued")]
    _assert_consistent(run_dir, 2)


def test_a_lost_or_replaced_study_storage_is_refused(ray_session, tmp_path, capsys):
    spec_path = write_spec(tmp_path, budget={"n_trials": 3}, resources={"max_concurrent": 1})
    run_search(load_spec(spec_path), trial_fn=INSTANT, progress=False)
    run_dir = tmp_path / "run"
    other = _oracle_run(tmp_path / "other", n_trials=1)  # a study of the same name, 1 trial
    db = run_dir / "study.db"
    saved = db.read_bytes()
    db.unlink()
    before = _snapshot(run_dir)
    argv = ["run", str(spec_path), "--quiet", "--trial-fn", INSTANT, "--resume"]
    for command in (argv, ["status", str(run_dir)], ["trials", str(run_dir)]):
        assert main(command) == 2
        assert capsys.readouterr().err == (
            f"error: run directory {run_dir}: the study storage {db} is missing but 3 trial(s) "
            f"are recorded in {run_dir / 'trials'}. Fix: restore the run's study.db (from a "
            "backup or the copy it came from), or start a new run with a different `output`.\n"
        )
        assert _snapshot(run_dir) == before  # no empty study.db created
    # another run's study in its place: resuming would give new trials the numbers 1 and 2
    shutil.copy(other / "study.db", db)
    trials = _snapshot(run_dir / "trials")
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: the study 'bc-test' in sqlite:///{db} does not know trial(s) 1, 2 recorded in "
        f"{run_dir / 'trials'}: the study storage was replaced or emptied. Fix: restore the "
        "run's study storage (study.db or the `storage` URL), or start a new run with a "
        "different `output`.\n"
    )
    assert _snapshot(run_dir / "trials") == trials
    db.write_bytes(saved)  # restored, the run resumes
    assert main(argv) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------- workers and trials


@pytest.mark.slow
def test_worker_killed_mid_trial_is_retried_or_failed_with_reason(ray_session, tmp_path):
    spec = load_spec(
        make_spec_dict(
            tmp_path,
            budget={"n_trials": 5},
            resources={"max_concurrent": 1},
            sampler={"name": "random", "seed": 0},
        )
    )
    # trials 0, 2 and 4 kill their worker once; trial 3 kills it on every attempt
    options = {"fake_dir": str(tmp_path), "fake_crash_always": [3]}
    summary = run_search(spec, trial_fn=CRASH, progress=False, trial_options=options)
    assert (summary.n_complete, summary.n_failed) == (4, 1)
    deaths = {p.name: p.read_text().count("died") for p in tmp_path.glob("crashed-*")}
    assert deaths == {"crashed-0": 1, "crashed-2": 1, "crashed-3": 2, "crashed-4": 1}
    recs = {r.number: r.info for r in RunDir(spec.output).trials()}
    # one death each: Ray restarted the worker and the retry finished the trial, also for
    # the trials after the first (a restarted worker is replaced, so each trial has a retry)
    assert {n: i["state"] for n, i in recs.items()} == {
        0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "FAIL", 4: "COMPLETE"
    }  # fmt: skip
    assert [n for n, i in recs.items() if i.get("worker_restarted")] == [0, 2, 4]
    assert recs[3]["reason"] == "worker died"
    assert recs[3]["error"] == (
        "ActorDiedError: The actor died unexpectedly before finishing this task."
    )
    study = _study(spec.output)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert study.trials[3].user_attrs["reason"] == "worker died"


def test_every_kind_of_failing_trial_is_recorded_and_the_study_goes_on(ray_session, tmp_path):
    plan = {"1": "exception", "3": "nan", "4": "oom", "6": "bad_graph", "7": "nan_value"}
    spec = load_spec(
        make_spec_dict(tmp_path, budget={"n_trials": 9}, sampler={"name": "random", "seed": 0})
    )
    summary = run_search(
        spec, trial_fn=INSTANT, progress=False, trial_options={"fake_fail_plan": plan}
    )
    assert (summary.n_complete, summary.n_failed) == (4, 5)
    failed = {r.number: r.info for r in RunDir(spec.output).trials("FAIL")}
    assert {n: i["reason"] for n, i in failed.items()} == {
        1: "exception",
        3: "non-finite loss",
        4: "out of memory",
        6: "invalid graph",
        7: "non-finite objective",
    }
    assert {n: i["error"] for n, i in failed.items()} == {
        1: "RuntimeError: planned failure in trial 1",
        3: "NonFiniteLossError: loss became nan at epoch 1",
        4: "ResourceExhaustedError: OOM when allocating tensor with shape [4096, 4096]",
        6: "ValueError: Inputs have incompatible shapes. Received shapes (3,) and (4,)",
        7: "objective value is nan",
    }
    for number, info in failed.items():
        if number != 7:
            assert "Traceback (most recent call last)" in info["traceback"]
    study = _study(spec.output)
    assert {t.number: t.user_attrs.get("reason") for t in study.trials if t.number in failed} == {
        n: i["reason"] for n, i in failed.items()
    }


def _real_invalid_graph(payload, data, reporter):
    import keras

    x = keras.Input((30,))
    keras.layers.Reshape((8, 8, 1))(x)  # 30 values cannot fill an 8x8 image


def test_a_real_keras_invalid_graph_is_classified():
    from hpsearch.search.runner import NullReporter
    from hpsearch.search.trial import TrialPayload, run_guarded

    payload = TrialPayload(
        number=0, params={}, family="dense", metric="log_loss", task="binary", seed=0,
        training={}, inputs={}, outputs={},
    )  # fmt: skip
    result = run_guarded(_real_invalid_graph, payload, None, NullReporter())
    assert (result.state, result.reason) == ("FAIL", "invalid graph")
    assert result.error.startswith(
        "ValueError: Exception encountered when calling Reshape.call().\n\n"
        "The total size of the tensor must be unchanged. Received: input_shape=(30,), "
        "target_shape=(8, 8, 1)"
    )
    assert "\x1b[" not in result.error + result.traceback  # Keras' terminal colours removed


@pytest.mark.parametrize("command", ["run", "pipeline"])
def test_all_failing_trials_stop_the_study_with_exit_1(ray_session, tmp_path, capsys, command):
    spec_path = write_spec(
        tmp_path,
        budget={"n_trials": 3},
        resources={"max_concurrent": 1, "max_failures": 2},
        sampler={"name": "random", "seed": 0},
    )
    run_dir = tmp_path / "run"
    argv = [command, str(spec_path), "--quiet", "--trial-fn", INSTANT]
    assert main([*argv, "--trial-option", "fake_fail_all=true"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "error: stopped after 2 consecutive failed trials (resources.max_failures = 2); "
        "last error: trial 1: exception: RuntimeError: every trial fails. Fix: read the failed "
        f"trials' errors (`hpsearch trials {run_dir}`), correct their cause (spec, space, data "
        "or trial function), then continue with --resume; finished trials are kept.\n"
    )
    assert [r.number for r in RunDir(run_dir).trials("FAIL")] == [0, 1]
    if command == "pipeline":
        assert not (run_dir / "ensembles").exists()
        return
    # the cause fixed, --resume finishes the budget and keeps the failures
    assert main([*argv, "--resume"]) == 0
    capsys.readouterr()
    rd = RunDir(run_dir)
    assert [r.number for r in rd.trials("FAIL")] == [0, 1]
    assert len(rd.trials("COMPLETE")) == 1


# --------------------------------------------------------------------------- ensembles


@pytest.fixture(scope="module")
def oracle_run(ray_session, tmp_path_factory):
    return _oracle_run(tmp_path_factory.mktemp("oracle"), n_trials=4)


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("ensembles", "trees"))
    return dst


@pytest.mark.slow
def test_two_ensemble_builds_with_one_name_at_once(oracle_run, tmp_path):
    run = _copy_run(oracle_run, tmp_path / "run")
    cmd = [sys.executable, "-m", "ensembles.cli", "build", str(run), "--name", "same",
           "--trees", "hgb", "--quiet"]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    # docs/ensembles.md: of two builds with the same name one wins, the other is refused
    # (exit 2, `already exists`) whether it saw the name taken before its work or at the rename
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    target = run / "ensembles" / "same"
    (loser,) = [err for rc, _, err in results if rc == 2]
    assert loser.splitlines()[-1] == (
        f"error: ensemble directory {target} already exists; ensembles are never overwritten. "
        "Fix: choose another --name or --out, or remove that directory."
    ), loser
    (winner,) = [out for rc, out, _ in results if rc == 0]
    assert f"files: {target}" in winner
    info = json.loads((target / "ensemble.json").read_text())
    assert info["name"] == "same"
    pred = np.load(target / "holdout_pred.npy", allow_pickle=False)
    assert pred.shape == (info["n_holdout"],) and np.isfinite(pred).all()
    assert [p.name for p in (run / "ensembles").iterdir()] == ["same"]  # no temporary leftovers
    assert [p.name for p in (run / "trees").iterdir()] == ["hgb"]
    json.loads((run / "trees" / "hgb" / "tree.json").read_text())


def _break_truncated(run: Path) -> Path:
    path = run / "trials" / "00002" / "holdout_pred.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _break_classes(run: Path) -> Path:
    path = run / "trials" / "00001" / "holdout_pred.npy"
    n = np.load(path).shape[0]
    np.save(path, np.full((n, 3), 1 / 3))
    # recorded in trial.json as a trial function that wrote it would have: the shape check
    # (not the SHA-256 check) refuses it
    info = json.loads((path.parent / "trial.json").read_text())
    info["files"][path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / "trial.json").write_text(json.dumps(info))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no complete trials", "mixed splits", "truncated", "classes"])
def test_ensembles_build_refuses_bad_runs_with_exit_2(oracle_run, ray_session, tmp_path, case):
    run = _copy_run(oracle_run, tmp_path / "run")
    runs = [run]
    if case == "no complete trials":
        shutil.rmtree(run / "trials")
        expected = (
            f"error: run {run} has no complete trials; run `hpsearch run SPEC` first "
            "(or `hpsearch run SPEC --resume` to continue it).\n"
        )
    elif case == "mixed splits":
        other = _oracle_run(tmp_path / "other", n_trials=2, split={"seed": 1})
        runs.append(other)
        expected = f"error: runs {run} and {other} cannot be blended: their splits differ"
    elif case == "truncated":
        path = _break_truncated(run)
        expected = (
            f"error: run {run}: trial 2: holdout prediction file {path} does not match the "
            "SHA-256 recorded in"
        )
    else:
        path = _break_classes(run)
        expected = f"error: run {run}: trial 1: holdout predictions {path} have shape"
    before = [_snapshot(r) for r in runs]
    proc = _ensembles("build", *map(str, runs), "--trees", "none", "--quiet")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == ""
    assert proc.stderr.startswith(expected), proc.stderr
    assert "Fix:" in proc.stderr or "run `hpsearch run SPEC` first" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [_snapshot(r) for r in runs] == before


# --------------------------------------------------------------------------- bad input


def _table(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n).round(3),
            "b": rng.normal(size=n).round(3),
            "c": rng.choice(["x", "y", "z"], n),
            "target": rng.choice(["no", "yes"], n),
        }
    )


def _csv_spec(d: Path, train: pd.DataFrame | str, test: Any = None, **data: Any) -> Path:
    """A spec over ``train.csv`` (and ``test.csv``) written from a frame or raw text."""
    for name, table in (("train.csv", train), ("test.csv", test)):
        if isinstance(table, pd.DataFrame):
            table.to_csv(d / name, index=False)
        elif table is not None:
            (d / name).write_text(table)
    data = {"train": "train.csv", "target": "target", **data}
    if test is not None:
        data["test"] = "test.csv"
    spec = make_spec_dict(d, data=data)
    spec["data"] = data
    spec.pop("metric")
    path = d / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _raw_spec(d: Path, text: str) -> Path:
    path = d / "spec.yaml"
    path.write_text(text)
    return path


def _case(name: str, d: Path) -> tuple[Path, list[str], str]:
    """(spec, extra arguments, the whole expected message) of one kind of bad input."""
    df = _table()
    extra: list[str] = []
    if name == "malformed YAML":
        spec = _raw_spec(d, "name: x\ndata: {train: sklearn:iris\n  target: y\n")
        expected = (
            f"spec file '{spec}' line 3, column 9: malformed YAML: expected ',' or '}}', but got "
            "':'. Fix: correct the YAML syntax there (indentation, ':' after keys, closing "
            "brackets)."
        )
    elif name == "python tag":
        spec = _raw_spec(d, "name: !!python/object/apply:os.system ['echo owned']\n")
        expected = (
            f"spec file '{spec}' line 1, column 7: the YAML tag "
            "'tag:yaml.org,2002:python/object/apply:os.system' is not allowed: specs are read "
            "with yaml.safe_load and never construct Python objects. Fix: remove the tag and "
            "write a plain value (string, number, list or mapping)."
        )
    elif name == "missing spec file":
        spec = d / "nowhere.yaml"
        expected = f"spec file '{spec}' does not exist. Fix: check the path (cwd is {ROOT})."
    elif name == "unknown top-level key":
        spec = write_spec(d, budgte={"n_trials": 3})
        expected = (
            "spec field 'budgte': unknown key 'budgte' in the top level. Fix: did you mean "
            "'budget'? valid keys in the top level: name, data, split, metric, space, spaces, sampler, "
            "budget, resources, training, pruner, output, storage, ensemble"
        )
    elif name == "unknown section key":
        spec = write_spec(d, budget={"n_trails": 3})
        expected = (
            "spec field 'budget.n_trails': unknown key 'n_trails' in section 'budget'. Fix: did "
            "you mean 'n_trials'? valid keys in section 'budget': n_trials, timeout_s"
        )
    elif name == "unknown space":
        from search_spaces.space import LIBRARY_DIR

        spec = write_spec(d, space="tabular_mpl")
        expected = (
            f"unknown space 'tabular_mpl': not in the library {LIBRARY_DIR} (available: "
            "catboost, extra_trees, hist_gbm, image_separable_cnn, lightgbm, random_forest, "
            "tabular_mlp, tabular_multi_input, tabular_multi_output, tabular_realmlp, "
            "text_conv1d, wide_deep, xgboost) and not a .yaml path. Did you mean 'tabular_mlp'? "
            "Fix: name a library space (`hpsearch space list`) or give the path of a .yaml "
            "space file."
        )
    elif name == "space file with a python tag":
        space = d / "evil.yaml"
        space.write_text(
            "name: evil\nfamily: dense\nparams:\n"
            "  n: !!python/object/apply:os.system ['echo owned']\n"
        )
        spec = write_spec(d, space=str(space))
        expected = (
            f"{space} (line 4, column 6): could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'. Python tags are refused: space "
            "files are read with a safe YAML loader. Fix: write plain values (numbers, strings, "
            "lists)."
        )
    elif name == "space needs images":
        spec = write_spec(d, space="image_separable_cnn")
        expected = (
            "space 'image_separable_cnn' (family cnn) needs image input, but the data has none. "
            "Fix: set `data.image_shape` in the spec (for example [8, 8, 1] for sklearn:digits)."
        )
    elif name == "metric does not fit the task":
        spec = write_spec(d, metric="rmse")
        expected = (
            "spec field 'metric': 'rmse' does not apply to a binary task. Fix: use one of: "
            "log_loss, roc_auc, accuracy, f1_macro, or set `data.task`"
        )
    elif name == "empty CSV":
        spec = _csv_spec(d, "", task="binary")
        expected = (
            f"data file '{d / 'train.csv'}': is empty (no header, no rows). Fix: write a header "
            "line and at least one row"
        )
    elif name == "CSV with a header only":
        spec = _csv_spec(d, "a,b,target\n", task="binary")
        expected = f"data file '{d / 'train.csv'}': has a header but no rows. Fix: add data rows"
    elif name == "missing target column":
        spec = _csv_spec(d, df.drop(columns="target"), task="binary")
        expected = (
            "spec field 'data.target': column 'target' is not in the training data "
            f"'{d / 'train.csv'}'; its columns are 'a', 'b', 'c'. Fix: set `data.target` to "
            "the name of the column to predict"
        )
    elif name == "single class":
        spec = _csv_spec(d, df.assign(target="yes"))
        expected = (
            "target column 'target': has a single class ('yes') in all 120 rows. Fix: a "
            "classifier needs at least two classes; check the target column or the data file"
        )
    elif name in ("NaN target", "infinite target"):
        y = np.random.default_rng(1).normal(size=len(df))
        y[[4, 9]] = np.nan if name == "NaN target" else np.inf
        spec = _csv_spec(d, df.assign(target=y), task="regression")
        expected = (
            "target column 'target': 2 row(s) have a missing (NaN) or infinite target, e.g. "
            "rows 4, 9. Fix: drop those rows or fill in their targets before the search"
        )
    elif name == "test.csv misses a column":
        spec = _csv_spec(d, df, test=df.drop(columns=["target", "b"]))
        expected = (
            "spec field 'data.test': the test table does not match the training columns: "
            "missing column(s) 'b'. Fix: give the test rows the training table's columns, "
            "without the target"
        )
    elif name == "test.csv has an extra column":
        spec = _csv_spec(d, df, test=df.drop(columns="target").assign(extra=1))
        expected = (
            "spec field 'data.test': the test table does not match the training columns: "
            "extra column(s) 'extra'. Fix: give the test rows the training table's columns, "
            "without the target"
        )
    elif name == "test.csv column of the wrong type":
        test = df.drop(columns="target").astype({"a": object})
        test.loc[7, "a"] = "n/a?"
        spec = _csv_spec(d, df, test=test)
        expected = (
            "column 'a' in the test data: expected numbers, found 'n/a?' (row 7). Fix: fix or "
            "remove the non-numeric values, or mark the column with `data.columns: "
            "{a: categorical}`"
        )
    elif name == "column override of the wrong type":
        df["c"] = df["a"].astype(object)
        df.loc[57, "c"] = "oops"
        spec = _csv_spec(d, df, columns={"c": "numeric"})
        expected = (  # row 57 of the file, whichever split it falls in
            "column 'c' in the training data: expected numbers, found 'oops' (row 57). Fix: "
            "fix or remove the non-numeric values, or mark the column with `data.columns: "
            "{c: categorical}`"
        )
    elif name == "image shape does not match":
        spec = write_spec(d, data={"image_shape": [8, 8, 1]})
        expected = (
            "spec field 'data.image_shape': [8, 8, 1] holds 64 values but the data has 30 "
            "numeric feature column(s). Fix: give a shape whose product is 30 (channels last), "
            "or null"
        )
    elif name == "budget.n_trials 0":
        spec = write_spec(d, budget={"n_trials": 0})
        expected = (
            "spec field 'budget.n_trials': must be at least 1, got 0. Fix: run at least one "
            "trial, for example `n_trials: 20`"
        )
    elif name == "--n-trials 0":
        spec, extra = write_spec(d), ["--n-trials", "0"]
        expected = (
            "--n-trials 0: must be at least 1. Fix: give the number of trials to run, for "
            "example --n-trials 20, or leave it out to use `budget.n_trials`."
        )
    elif name == "output is a file":
        (d / "run").write_text("not a directory\n")
        spec = write_spec(d)
        expected = (
            f"output {d / 'run'} is a file, not a directory. Fix: set `output` to a directory "
            "path (it is created when missing)."
        )
    elif name in ("output holds other files", "output holds a user's data folder"):
        if name == "output holds other files":
            (d / "run").mkdir()
            (d / "run" / "notes.txt").write_text("mine\n")
        else:  # looks like a run's data/ folder, but holds files hpsearch never writes
            (d / "run" / "data").mkdir(parents=True)
            (d / "run" / "data" / "train.csv").write_text("a,target\n1,0\n")
            extra = ["--resume"]
        spec = write_spec(d)
        expected = (
            f"output directory {d / 'run'} exists, is not empty and holds no run. Fix: choose "
            "a new `output` directory; hpsearch never overwrites files."
        )
    elif name in PREWORK_CASES:
        return _prework_case(name, d, df)
    else:
        raise AssertionError(name)
    return spec, extra, expected


def _edit_spec(path: Path, **top: Any) -> Path:
    """Set top-level keys of a written spec (merging into a section given as a dict)."""
    raw = yaml.safe_load(path.read_text())
    for key, value in top.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _prework_case(name: str, d: Path, df: pd.DataFrame) -> tuple[Path, list[str], str]:
    """Bad input that is refused before the work starts (the checks of docs/faults.md)."""
    if name == "output under /proc":
        spec = write_spec(d, output="/proc/x")
        expected = (
            "spec field 'output': the run directory /proc/x: cannot be written: nothing can be "
            "created in /proc (No such file or directory). Fix: set `output` to a directory "
            "path in a writable folder (it is created when missing)"
        )
    elif name == "output under a file":
        (d / "notes.txt").write_text("mine\n")
        spec = write_spec(d, output=str(d / "notes.txt" / "sub"))
        expected = (
            f"spec field 'output': the run directory {d / 'notes.txt' / 'sub'}: cannot be "
            f"written: {d / 'notes.txt'} is a file, not a directory. Fix: set `output` to a "
            "directory path in a writable folder (it is created when missing)"
        )
    elif name == "storage under /proc":
        spec = write_spec(d, storage="sqlite:////proc/nope/study.db")
        expected = (
            "spec field 'storage': the SQLite file /proc/nope/study.db cannot be written: its "
            "folder /proc/nope does not exist (SQLite does not create folders). Fix: name a file "
            "in an existing writable folder, e.g. `storage: sqlite:///runs/study.db`, or set "
            "`storage: null` for study.db in the run directory."
        )
    elif name == "in-memory storage":
        spec = write_spec(d, storage="sqlite:///:memory:")
        expected = (
            "spec field 'storage': 'sqlite:///:memory:' is an in-memory database, gone when the "
            "driver exits (--resume and `hpsearch status` would find no study). Fix: give an "
            "SQLite file, e.g. `storage: sqlite:///runs/study.db`, or null for study.db in the "
            "run directory"
        )
    elif name == "duplicate test ids":
        df.insert(0, "id", range(len(df)))
        test = df.drop(columns="target").head(20)
        test.loc[[3, 11], "id"] = 7
        spec = _csv_spec(d, df, test=test, id="id")
        expected = (
            "spec field 'data.test': the id column 'id' of "
            f"'{d / 'test.csv'}' repeats 1 id(s), e.g. 7 (rows 3, 7, 11). Fix: give every test "
            "row its own id: a submission holds one row per id"
        )
    elif name == "data.columns drops every feature":
        spec = _csv_spec(d, df, columns={"a": "drop", "b": "drop", "c": "drop"})
        expected = (
            "spec field 'data.columns': every feature column of the training data is dropped: "
            "'a', 'b', 'c' by `data.columns`. Fix: keep at least one: give it a kind in "
            "`data.columns`, e.g. `{a: numeric}`, or remove its `drop`"
        )
    elif name == "only an id and a target":
        spec = _csv_spec(d, df[["target"]].assign(id=range(len(df))), id="id")
        expected = (
            f"training data '{d / 'train.csv'}': has no feature column: its only columns are "
            "'id' (data.id) and 'target' (data.target). Fix: add the columns the model should "
            "learn from to the table"
        )
    elif name == "one-row valid and holdout splits":
        spec = _edit_spec(_csv_spec(d, df), split={"valid": 0.001, "holdout": 0.001})
        expected = (
            "spec field 'split.min_rows': 120 rows split into train 118, valid 1, holdout 1 "
            "(split.valid 0.001, split.holdout 0.001): valid and holdout hold fewer than "
            "split.min_rows = 10 rows. Fix: raise `split.valid` and `split.holdout` to 0.08, "
            "use a table of at least 9002 rows, or lower `split.min_rows` (scores on fewer "
            "rows are noise)"
        )
    elif name == "a 5-row table":
        spec = _csv_spec(d, df.head(5).assign(target=["no", "yes", "no", "yes", "no"]))
        expected = (
            "spec field 'split.min_rows': 5 rows split into train 3, valid 1, holdout 1 "
            "(split.valid 0.2, split.holdout 0.2): train, valid and holdout hold fewer than "
            "split.min_rows = 10 rows. Fix: use a table of at least 47 rows, or lower "
            "`split.min_rows` (scores on fewer rows are noise)"
        )
    elif name == "a class missing from a split":
        df.loc[:2, "target"] = "rare"  # 3 rows of a third class
        spec = _csv_spec(d, df)
        expected = (
            "spec field 'split.min_class_rows': class 'rare' of target 'target' has 0 row(s) "
            "in the valid split (3 in all 120 rows), fewer than split.min_class_rows = 1. Fix: "
            "add rows of that class, merge or drop the rare class(es), or set "
            "`split.min_class_rows: 0` to accept splits without it"
        )
    elif name == "training.trial_fn not importable":
        spec = write_spec(d, training={"trial_fn": "nosuchmodule:fn"})
        expected = (
            "spec field 'training.trial_fn': cannot find the module 'nosuchmodule' of "
            "'nosuchmodule:fn'. Fix: check the module path, install its package or add its "
            "folder to PYTHONPATH (it must import on the driver and on every Ray node)"
        )
    elif name == "duplicate CSV column names":
        spec = _csv_spec(d, df.to_csv(index=False).replace("a,b,c,", "a,b,a,", 1))
        expected = (
            f"data file '{d / 'train.csv'}': repeats the column name(s) 'a' in its header "
            "(pandas would silently rename the repeats 'a.1'). Fix: give every column of the "
            "header line its own name"
        )
    elif name == "duplicate YAML keys":
        spec = _raw_spec(d, "name: x\ndata:\n  train: sklearn:iris\n  train: sklearn:wine\n")
        expected = (
            f"spec file '{spec}' line 4, column 3: duplicate key 'train', first on line 3; YAML "
            "would keep only the last one. Fix: keep one 'train' key in this mapping and delete "
            "the other."
        )
    elif name == "spec saved in latin-1":
        spec = d / "spec.yaml"
        spec.write_bytes("name: caf\u00e9\n".encode("latin-1"))
        expected = (
            f"spec file '{spec}' is not UTF-8 text (byte 0xe9 at offset 9). Fix: save it as "
            "UTF-8, for example `iconv -f latin1 -t utf-8 OLD.yaml > NEW.yaml`."
        )
    elif name in ("alias bomb in the spec", "alias bomb in a space file", "recursive alias"):
        return _alias_case(name, d)
    else:
        raise AssertionError(name)
    return spec, [], expected


# under 1 KB, it expands to 9**9 values: minutes and gigabytes when unguarded (issue 16)
ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def _alias_case(name: str, d: Path) -> tuple[Path, list[str], str]:
    bomb = (
        "YAML aliases expand this value beyond 10000 added values (an alias bomb); it is "
        "refused unread. Fix: write the values out, or repeat an anchored value (*name) a few "
        "times rather than nesting aliases of aliases."
    )
    if name == "alias bomb in the spec":
        spec = _raw_spec(d, ALIAS_BOMB + "name: *i\n")
        return spec, [], f"spec file '{spec}' line 5, column 4: {bomb}"
    if name == "alias bomb in a space file":
        space = d / "bomb.yaml"
        space.write_text(ALIAS_BOMB + "name: bomb\nfamily: dense\nparams:\n  n: *i\n")
        return write_spec(d, space=str(space)), [], f"{space} (line 5, column 4): {bomb}"
    spec = _raw_spec(d, "name: &n [*n]\n")
    return (
        spec,
        [],
        (
            f"spec file '{spec}' line 1, column 7: a YAML alias refers to the value that contains "
            "it (a recursive alias). Fix: replace the alias (*name) inside its own anchored value "
            "by a plain value."
        ),
    )


PREWORK_CASES = [
    "output under /proc",
    "output under a file",
    "storage under /proc",
    "in-memory storage",
    "duplicate test ids",
    "data.columns drops every feature",
    "only an id and a target",
    "one-row valid and holdout splits",
    "a 5-row table",
    "a class missing from a split",
    "training.trial_fn not importable",
    "duplicate CSV column names",
    "duplicate YAML keys",
    "spec saved in latin-1",
    "alias bomb in the spec",
    "alias bomb in a space file",
    "recursive alias",
]


BAD_INPUT = [
    "malformed YAML",
    "python tag",
    "missing spec file",
    "unknown top-level key",
    "unknown section key",
    "unknown space",
    "space file with a python tag",
    "space needs images",
    "metric does not fit the task",
    "empty CSV",
    "CSV with a header only",
    "missing target column",
    "single class",
    "NaN target",
    "infinite target",
    "test.csv misses a column",
    "test.csv has an extra column",
    "test.csv column of the wrong type",
    "image shape does not match",
    "budget.n_trials 0",
    "--n-trials 0",
    "output is a file",
    "output holds other files",
    "output holds a user's data folder",
    "column override of the wrong type",
    *PREWORK_CASES,
]


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, name):
    spec_path, extra, expected = _case(name, tmp_path)
    before = _snapshot(tmp_path)
    rc = main(["run", str(spec_path), "--quiet", "--trial-fn", INSTANT, *extra])
    out, err = capsys.readouterr()
    assert (rc, out) == (2, "")
    assert err == f"error: {expected}\n"
    assert _snapshot(tmp_path) == before  # no run directory, no file touched


@pytest.mark.parametrize("name", ["python tag", "unreachable Ray address"])
def test_bad_input_exit_status_of_the_process(tmp_path, name):
    if name == "unreachable Ray address":  # Ray alone would retry it for many minutes
        spec_path, extra = write_spec(tmp_path), ["--address", "127.0.0.1:1"]
        expected = (
            "cannot connect to the Ray cluster at --address '127.0.0.1:1': [Errno 111] "
            "Connection refused. Fix: start the cluster (`ray start --head` or "
            "`cluster/local.sh up`) or drop --address to use an embedded local Ray."
        )
    else:
        spec_path, extra, expected = _case(name, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch.cli.app", "run", str(spec_path), "--quiet", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"error: {expected}\n")
    assert not (tmp_path / "run").exists()


def test_existing_run_from_a_different_spec_is_refused(ray_session, tmp_path, capsys):
    spec_path = write_spec(tmp_path, budget={"n_trials": 2})
    run_search(load_spec(spec_path), trial_fn=INSTANT, progress=False)
    run_dir = tmp_path / "run"
    before = _snapshot(run_dir)
    other = tmp_path / "other"
    other.mkdir()
    other_spec = write_spec(other, space="wide_deep", output=str(run_dir))
    argv = ["run", str(other_spec), "--quiet", "--trial-fn", INSTANT]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: run directory {run_dir} already holds run 'bc-test' made from a different "
        "spec: the space 'wide_deep' differs from the stored one (space.yaml). Fix: set "
        "`output` to a new directory for this spec (hpsearch never overwrites a run).\n"
    )
    assert main([*argv, "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot resume {run_dir}: the space 'wide_deep' differs from the stored one "
        "(space.yaml). Fix: restore the original spec, or start a new run with a different "
        "`output`.\n"
    )
    assert main(["run", str(spec_path), "--quiet", "--trial-fn", INSTANT]) == 2
    assert capsys.readouterr().err == (
        f"error: run directory {run_dir} already holds run 'bc-test' (2 trials recorded). "
        "Fix: add --resume to continue it, or set `output` to a new directory.\n"
    )
    # every setting that shapes the data, the split or the score is compared, each named
    changes = {
        "split.seed 1": ({"split": {"seed": 1}}, "split {'valid': 0.2, 'holdout': 0.2, 'seed': 1} differs from the stored {'valid': 0.2, 'holdout': 0.2, 'seed': 0}"),
        "metric": ({"metric": "roc_auc"}, "metric 'roc_auc' differs from the stored 'log_loss'"),
        "data.columns": ({"data": {"columns": {"mean radius": "drop"}}}, "data.columns {'mean radius': 'drop'} differs from the stored {} (spec.yaml)"),
        "data.id": ({"data": {"id": "mean area"}}, "data.id 'mean area' differs from the stored None (spec.yaml)"),
    }  # fmt: skip
    for what, (override, diff) in changes.items():
        changed = write_spec(other, output=str(run_dir), **override)
        for resume in ([], ["--resume"]):
            assert main(["run", str(changed), "--quiet", "--trial-fn", INSTANT, *resume]) == 2
            err = capsys.readouterr().err
            assert diff in err, (what, err)
            assert "made from a different spec" in err if not resume else "cannot resume" in err
    assert _snapshot(run_dir) == before


def test_a_new_run_may_not_adopt_another_runs_study_on_a_shared_storage(
    ray_session, tmp_path, capsys
):
    """Two runs with one `name` on one `storage` URL: the second is refused before anything
    is written, rather than inheriting the first one's trials and budget."""
    db = tmp_path / "shared.db"
    first = tmp_path / "a"
    first.mkdir()
    spec_a = write_spec(first, budget={"n_trials": 2}, storage=f"sqlite:///{db}")
    assert main(["run", str(spec_a), "--quiet", "--trial-fn", INSTANT]) == 0
    capsys.readouterr()
    second = tmp_path / "b"
    second.mkdir()
    spec_b = write_spec(second, storage=f"sqlite:///{db}")
    assert main(["run", str(spec_b), "--quiet", "--trial-fn", INSTANT]) == 2
    assert capsys.readouterr().err == (
        f"error: spec field 'name': the storage 'sqlite:///{db}' already holds a study named "
        "'bc-test', which belongs to another run. Fix: give this run a new `name`, or continue "
        "that run with --resume on its own `output`.\n"
    )
    assert not (second / "run").exists()
    spec_b = write_spec(second, name="bc-second", budget={"n_trials": 1}, storage=f"sqlite:///{db}")
    assert main(["run", str(spec_b), "--quiet", "--trial-fn", INSTANT]) == 0
    import optuna

    assert sorted(optuna.get_all_study_names(f"sqlite:///{db}")) == ["bc-second", "bc-test"]
    assert len(optuna.load_study(study_name="bc-test", storage=f"sqlite:///{db}").trials) == 2


# --------------------------------------------------------------------------- damaged run files


def _lambda_model_bytes(tmp_path: Path) -> bytes:
    """A model.keras holding a Lambda layer (Python code), which Keras' safe mode refuses."""
    import keras

    x = keras.Input((30,))
    y = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Lambda(lambda t: t * 2.0)(x))
    path = tmp_path / "lambda.keras"
    keras.Model(x, y).save(path)
    return path.read_bytes()


def _foreign_class_model_bytes(tmp_path: Path) -> bytes:
    """A valid .keras zip whose config names a class outside Keras (``os.system``)."""
    import io
    import zipfile

    import keras

    path = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((30,)), keras.layers.Dense(1)]).save(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(buf, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config.update(module="os", class_name="system", registered_name="system")
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return buf.getvalue()


def _record_model(tdir: Path, data: bytes) -> Path:
    """Write ``model.keras`` into a trial and record its SHA-256, as the writer would
    (``hpsearch.core.atomic.write_hashed``): the hash check passes, Keras must refuse."""
    from hpsearch.core import atomic

    info = json.loads((tdir / "trial.json").read_text())
    info["files"]["model.keras"] = atomic.write_hashed(tdir / "model.keras", data)
    atomic.write_json(tdir / "trial.json", info)
    return tdir / "model.keras"


SAFE_MODE = (
    "is refused by Keras safe mode: it holds Python code (such as a Lambda layer) that loading "
    "would run, so it is not loaded. Fix: only if you trust whoever wrote the run, load it "
    "yourself with `keras.saving.load_model(path, safe_mode=False)`; otherwise leave that "
    "trial out (delete its trial directory, then build any ensemble that uses it again), and "
    "save models without Python code (no Lambda layers) in the trial function."
)


def test_a_model_refused_by_keras_safe_mode_is_one_line_naming_the_file(tmp_path):
    """`hpsearch.load_run(RUN).model(n)` on a model.keras whose recorded hash matches but
    which Keras refuses (a Lambda layer) or cannot read (rehashed junk, a foreign class):
    a RunDirError of one line naming the file and the fix, never a Keras traceback."""
    import hpsearch
    from hpsearch.core.errors import RunDirError
    from hpsearch.search.trial import TrialResult

    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.write_meta({"name": "hand-made"})
    models = {
        0: _lambda_model_bytes(tmp_path),
        1: b"PK\x03\x04 not a zip archive, rehashed",
        2: _foreign_class_model_bytes(tmp_path),
    }
    for number, data in models.items():
        result = TrialResult(number, "COMPLETE", value=0.5, predictions={"valid": np.zeros(4)})
        result.model_bytes = data  # written and hashed by the writer itself
        rd.write_trial(result, {})
    run = hpsearch.load_run(rd.path)
    fix = (
        "Fix: restore {t} from a copy of the run, or delete that trial directory (an ensemble "
        "then leaves the trial out)."
    )
    expected = {
        0: f"{SAFE_MODE}",
        1: "cannot be loaded by Keras (it is not a .keras zip archive). " + fix,
        2: "cannot be loaded by Keras (TypeError: Could not locate class 'system'.",
    }
    for number, tail in expected.items():
        tdir = rd.trial_path(number)
        with pytest.raises(RunDirError) as err:
            run.model(number)
        message = str(err.value)
        head = f"trial {number}: model {tdir / 'model.keras'} "
        assert message.startswith(head + tail.format(t=tdir)), message
        assert "\n" not in message and "Fix: " in message
        assert "/tmp/hpsearch-model-" not in message  # the file's own path, not the copy's


def test_ensembles_predict_with_a_model_refused_by_safe_mode_exits_2(oracle_run, tmp_path, capsys):
    """The same through `ensembles predict`: the member's model checks out against
    ensemble.json, Keras safe mode refuses it: exit 2, one line, no prediction written."""
    import ensembles
    from ensembles.cli import main as ens_main
    from hpsearch.core.data import load_table

    run = _copy_run(oracle_run, tmp_path / "run")
    model = _record_model(RunDir(run).trial_path(0), _lambda_model_bytes(tmp_path))
    ens = ensembles.build(run, trees=(), method="mean", name="lambda")
    assert [m["trial"] for m in ens.info["members"] if m["kind"] == "network"].count(0) == 1
    rows = tmp_path / "new.csv"
    load_table("sklearn:breast_cancer").drop(columns=["target"]).head(5).to_csv(rows, index=False)
    out = tmp_path / "out.csv"
    label = next(m["label"] for m in ens.info["members"] if m.get("trial") == 0)
    assert ens_main(["predict", str(ens.out_dir), str(rows), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: member {label}: model {model} {SAFE_MODE}\n"
    assert not out.exists()


def _pred_result(number: int, value: float) -> Any:
    from hpsearch.search.trial import TrialResult

    rng = np.random.default_rng(number)
    preds = {"valid": rng.random(6), "holdout": rng.random(6)}
    return TrialResult(number, "COMPLETE", value=value, predictions=preds)


def test_resume_moves_damaged_trials_aside_and_runs_them_again(tmp_path):
    """recover() without Ray: a COMPLETE trial whose recorded prediction file is missing or
    changed, or whose trial.json is damaged, is moved to damaged/trials/<n> and its
    parameters queued again (`replaces: n`), out of the budget; a FAIL trial with a damaged
    trial.json is only moved aside; a sound trial is left alone; running it twice (or after
    a driver killed between the queueing and the move) queues nothing twice."""
    from hpsearch.search.driver import counted_trials, recover
    from hpsearch.search.trial import TrialResult
    from search_spaces import load_space

    space = load_space("tabular_mlp")
    rd = RunDir(tmp_path / "run")
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    configs = {}
    for number in range(5):
        trial = study.ask()
        configs[number] = space.sample_optuna(trial)
        if number == 4:
            result = TrialResult(4, "FAIL", error="RuntimeError: boom", reason="exception")
            rd.write_trial(result, configs[4])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        rd.write_trial(_pred_result(number, 0.1 * number), configs[number])
        study.tell(trial, 0.1 * number)
    (rd.trial_path(1) / "holdout_pred.npy").unlink()
    np.save(rd.trial_path(2) / "valid_pred.npy", np.zeros(6))  # same shape, other values
    for number in (3, 4):
        path = rd.trial_path(number) / "trial.json"
        path.write_text(path.read_text()[:25])

    notes: list[str] = []
    assert recover(study, rd, space, notes) == (0, 3)

    assert [r.number for r in rd.trials()] == [0]
    moved = sorted(p.name for p in (rd.path / "damaged" / "trials").iterdir())
    assert moved == ["00001", "00002", "00003", "00004"]
    why = (rd.path / "damaged" / "trials" / "00001" / "damaged.txt").read_text()
    assert why.startswith("trial 1: holdout prediction file ") and "is missing" in why
    assert "does not match the SHA-256" in notes[1] and "queued to run again" in notes[1]
    assert notes[3].endswith("; kept in the study as it ended")
    assert len(notes) == 4
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs["replaces"] for t in waiting] == [1, 2, 3]
    assert sorted(t.number for t in counted_trials(study)) == [0, 4]
    for t in waiting:  # each runs its own parameters once more
        again = study.ask()
        assert space.sample_optuna(again) == configs[t.user_attrs["replaces"]]
        rd.write_trial(_pred_result(again.number, 0.5), space.sample_optuna(again))
        study.tell(again, 0.5)
    assert len(counted_trials(study)) == 5  # the budget: 5 trials, as before the damage
    assert recover(study, rd, space) == (0, 0)

    # killed between queueing trial 0 again and moving it: the next resume moves it only
    (rd.trial_path(0) / "valid_pred.npy").write_bytes(b"junk")

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt("killed before the move")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunDir, "move_aside", killed)
        with pytest.raises(KeyboardInterrupt):
            recover(study, rd, space)
    assert rd.trial_path(0).exists()
    assert recover(study, rd, space) == (0, 0)
    replacing = [t for t in study.get_trials() if t.user_attrs.get("replaces") == 0]
    assert len(replacing) == 1 and not rd.trial_path(0).exists()


DAMAGED_SPEC = {
    "budget": {"n_trials": 3},
    "resources": {"max_concurrent": 1},
    "sampler": {"name": "random", "seed": 0},
    "training": {"trial_fn": ORACLE},
}


@pytest.fixture(scope="module")
def damaged_pristine(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged-pristine")
    assert run_search(load_spec(make_spec_dict(root, **DAMAGED_SPEC)), progress=False).n_complete
    return root / "run"


def _damage(run: Path, how: str) -> Path:
    """Break one file of a run as a crash, a full disk or a careless hand would."""
    trial = run / "trials" / "00001"
    if how == "truncated trial.json":
        path = trial / "trial.json"
        path.write_text(path.read_text()[:20])
    elif how == "trial.json holding a list":
        path = trial / "trial.json"
        path.write_text("[1, 2]")
    elif how == "trial.json an empty object":
        path = trial / "trial.json"
        path.write_text("{}")
    elif how == "truncated run.json":
        path = run / "run.json"
        path.write_text('{"name": ')
    elif how in ("empty study.db", "garbage study.db", "truncated study.db"):
        path = run / "study.db"
        data = path.read_bytes()
        cut = {"empty study.db": b"", "garbage study.db": b"this is no database at all"}
        path.write_bytes(cut.get(how, data[: len(data) // 2]))  # truncated: header intact
    elif how == "missing valid predictions":
        path = trial / "valid_pred.npy"
        path.unlink()
    elif how == "changed holdout predictions":
        path = trial / "holdout_pred.npy"
        np.save(path, np.load(path)[::-1])  # same shape, other values
    else:
        raise AssertionError(how)
    return path


# damage -> the start of the one error line (after "error: ") for the commands that refuse
# it; "ok" where the command does not need the damaged file; "repaired" where --resume
# moves the trial aside and runs it again
_TRIAL_JSON = "{path} is damaged (trial.json "
_STUDY_DB = "{path} is damaged ("
_PRED = "run {run}: trial 1: "
DAMAGED_FILES = {
    #                              status/trials/best  ensembles build  run --resume
    "truncated trial.json": (_TRIAL_JSON, _TRIAL_JSON, "repaired"),
    "trial.json holding a list": (_TRIAL_JSON, _TRIAL_JSON, "repaired"),
    "trial.json an empty object": (_TRIAL_JSON + "holds no trial number", _TRIAL_JSON, "repaired"),
    "truncated run.json": (
        "{path} is damaged (run.json ",
        "{path} is damaged (run.json ",
        "{path} is damaged (run.json ",
    ),
    "empty study.db": (_STUDY_DB + "empty)", "ok", _STUDY_DB + "empty)"),
    "garbage study.db": (_STUDY_DB + "not an SQLite database)", "ok", _STUDY_DB + "not an"),
    "truncated study.db": (
        _STUDY_DB + "SQLite: database disk image is malformed)",
        "ok",
        _STUDY_DB + "SQLite:",
    ),
    "missing valid predictions": ("ok", "ok", "repaired"),  # a build reads no valid predictions
    "changed holdout predictions": (
        "ok",
        _PRED + "holdout prediction file {path} does not match",
        "repaired",
    ),
}
DAMAGE_COMMANDS = ("status", "trials", "best", "build", "resume")


def _command(name: str, run: Path, spec: Path) -> int:
    from ensembles.cli import main as ens_main

    if name == "build":
        return ens_main(["build", str(run), "--trees", "none", "--quiet"])
    if name == "resume":
        return main(["run", str(spec), "--resume", "--quiet"])
    return main([name, str(run)])


@pytest.mark.parametrize("command", DAMAGE_COMMANDS)
@pytest.mark.parametrize("damage", list(DAMAGED_FILES))
def test_a_damaged_run_file_is_refused_or_repaired(
    damaged_pristine, tmp_path, capsys, damage, command
):
    """Every reader of a run (status, trials, best, ensembles build, --resume) on each kind
    of damaged file: exit 2 with one line naming the file and the fix, nothing written;
    or, where the command does not need that file, it works; or --resume repairs it."""
    run = tmp_path / "run"
    shutil.copytree(damaged_pristine, run)
    spec = write_spec(tmp_path, **DAMAGED_SPEC)
    path = _damage(run, damage)
    expected = DAMAGED_FILES[damage][{"build": 1, "resume": 2}.get(command, 0)]
    before = _snapshot(run)
    code = _command(command, run, spec)
    out, err = capsys.readouterr()
    if expected == "repaired":
        assert code == 0, err
        _assert_repaired(run, DAMAGED_SPEC["budget"]["n_trials"], path)
        return
    if expected == "ok":
        assert code == 0, err
        if command != "build":  # a read-only command writes nothing
            assert _snapshot(run) == before
        return
    assert (code, out) == (2, "")
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: " + expected.format(path=path, run=run)), lines[0]
    assert " Fix: " in lines[0] and "Traceback" not in err
    assert _snapshot(run) == before  # refused: nothing written, the damaged file as it was


def _assert_repaired(run: Path, n_trials: int, damaged: Path) -> None:
    """Trial 1 moved to damaged/trials/00001 (with why), its parameters run once more as a
    new trial that `replaces` it, the budget kept, every remaining file sound."""
    moved = run / "damaged" / "trials" / "00001"
    assert (moved / damaged.name).exists() or not damaged.exists()
    assert (moved / "damaged.txt").read_text().startswith(("trial 1: ", str(damaged)))
    rd = RunDir(run)
    study = _study(run)
    again = [t for t in study.trials if t.user_attrs.get("replaces") == 1]
    assert len(again) == 1 and again[0].state == optuna.trial.TrialState.COMPLETE
    assert again[0].params == study.trials[1].params
    complete = rd.trials("COMPLETE")
    assert sorted(r.number for r in complete) == [0, 2, again[0].number]
    assert len(complete) == n_trials
    for rec in complete:
        for split in ("valid", "holdout"):
            assert rec.predictions(split).ndim == 1
    rows = {r["number"]: r for r in hpsearch_run(run).trial_rows()}
    assert (rows[1]["state"], rows[1]["reason"], rows[1]["interrupted"]) == (
        "COMPLETE", "damaged, run again", True
    )  # fmt: skip
    assert hpsearch_run(run).status()["trials"] == {
        "COMPLETE": n_trials, "COMPLETE (damaged, run again)": 1
    }  # fmt: skip
    assert RunDir(run).read_meta()["n_trials_done"] == n_trials


def hpsearch_run(run: Path) -> Any:
    from hpsearch.core.runs import Run

    return Run(run)


# --------------------------------------------------------------------------- resume without repeats


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "hyperopt-tpe", "random"])
def test_kill_and_resume_repeats_no_configuration(ray_session, tmp_path, sampler):
    """The drill of issue 16: a seeded search SIGKILLed right after trial 1 was told, then
    resumed to 8 trials through the real driver. Before the seed was shifted on resume,
    the new driver's sampler replayed its draws from the start (trial 5 had trial 0's exact
    parameters). Now every COMPLETE trial has its own configuration, and a trial that was in
    flight at the kill runs its own parameters exactly once more."""
    spec_path = write_spec(
        tmp_path,
        budget={"n_trials": 8},
        resources={"max_concurrent": 2},
        sampler={"name": sampler, "seed": 0},
    )
    run_dir = tmp_path / "run"
    proc = _driver(spec_path, ray_session, "--trial-fn", ORACLE, "--trial-option",
                   "fake_sleep_s=0.3", env={FAULT_ENV: "kill_after_trial:1"})  # fmt: skip
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    killed = _study(run_dir)
    first = {t.number: t.params for t in killed.trials}
    in_flight = [t.number for t in killed.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert killed.trials[1].state == optuna.trial.TrialState.COMPLETE

    summary = run_search(load_spec(spec_path), resume=True, trial_fn=ORACLE, progress=False)
    assert (summary.n_complete, summary.n_failed) == (8, 0)
    _assert_consistent(run_dir, 8)
    study = _study(run_dir)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    configs = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(set(configs)) == len(configs) == 8, configs
    for number in in_flight:
        again = [t for t in study.trials if t.user_attrs.get("requeued_from") == number]
        assert len(again) == 1 and again[0].state == optuna.trial.TrialState.COMPLETE
        assert again[0].params == first[number]
    assert all(t.params != first[0] for t in complete if t.number > max(first))


# --------------------------------------------------------------------------- issue 16, case by case

# Each case of issue 16 ("Reliability, round 2") -> the tests that prove it is refused with
# exit 2 and one line, or handled as docs/faults.md describes. `[...]` names a row of a
# table-driven test. test_every_case_of_issue_16_names_tests_that_exist keeps it true.
ISSUE_16 = {
    "1 code run from a tampered run directory": [
        "test_integrity.py::test_a_planted_joblib_payload_is_never_loaded",
        "test_integrity.py::test_a_planted_pickle_with_a_matching_tree_json_is_refused_by_the_ensemble",
        "test_integrity.py::test_changed_planted_or_missing_trial_files_are_refused",
        "test_integrity.py::test_run_model_loads_only_the_recorded_model",
        "test_faults.py::test_a_model_refused_by_keras_safe_mode_is_one_line_naming_the_file",
        "test_faults.py::test_ensembles_predict_with_a_model_refused_by_safe_mode_exits_2",
    ],
    "2 YAML alias bombs, duplicate keys, long values quoted": [
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[alias bomb in the spec]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[alias bomb in a space file]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[recursive alias]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[duplicate YAML keys]",
        "test_spec.py::test_messages_quote_at_most_about_200_characters_of_a_value",
        "test_malformed.py::test_generated_specs_load_or_are_refused_cleanly",
        "test_damaged.py::test_a_damaged_frozen_spec_is_refused_by_resume_without_printing_it[alias bomb]",
        "test_damaged.py::test_a_long_stored_value_is_quoted_short_by_resume",
        "test_prework.py::test_a_value_too_long_for_a_path_or_a_message_is_one_short_line",
    ],
    "3 resources that cannot be had": [
        "test_resources.py::test_resources_no_node_has_are_refused_with_nothing_written",
        "test_resources.py::test_a_custom_resource_no_node_has_is_refused",
        "test_resources.py::test_no_gpu_at_all_names_cpu_only_trials_as_the_fix",
        "test_resources.py::test_a_trial_waiting_longer_than_wait_timeout_s_stops_the_run",
    ],
    "4 no repeated configuration on resume": [
        "test_faults.py::test_kill_and_resume_repeats_no_configuration[tpe]",
        "test_faults.py::test_kill_and_resume_repeats_no_configuration[hyperopt-tpe]",
        "test_faults.py::test_kill_and_resume_repeats_no_configuration[random]",
        "test_samplers.py::test_a_resumed_study_proposes_no_configuration_it_has_run",
    ],
    "5 damaged run files": [
        "test_faults.py::test_a_damaged_run_file_is_refused_or_repaired",
        "test_faults.py::test_resume_moves_damaged_trials_aside_and_runs_them_again",
        "test_faults.py::test_a_model_refused_by_keras_safe_mode_is_one_line_naming_the_file",
        "test_damaged.py::test_damaged_study_db_is_refused_and_left_as_it_was",
        "test_damaged.py::test_truncated_trial_json_is_refused_naming_the_file",
        "test_damaged.py::test_a_damaged_frozen_spec_is_refused_by_resume_without_printing_it",
        "test_damaged.py::test_a_damaged_data_file_is_refused_naming_it",
        "test_faults.py::test_a_lost_or_replaced_study_storage_is_refused",
    ],
    "6 unwritable paths, a spec not in UTF-8": [
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[output under /proc]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[output under a file]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[storage under /proc]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[spec saved in latin-1]",
        "test_prework.py::test_cli_output_paths_are_checked_before_any_work",
        "test_prework.py::test_a_command_line_path_too_long_for_the_file_system_exits_2",
    ],
    "7 exit status when every trial failed": [
        "test_resources.py::test_a_search_with_no_complete_trial_exits_1_naming_the_most_common_failure",
        "test_resources.py::test_stored_failure_texts_carry_no_colour_codes_and_the_api_raises",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[data.columns drops every feature]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[only an id and a target]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[training.trial_fn not importable]",
        "test_faults.py::test_all_failing_trials_stop_the_study_with_exit_1",
    ],
    "8 duplicate ids in test.csv": [
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[duplicate test ids]",
    ],
    "9 degenerate data": [
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[one-row valid and holdout splits]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[a 5-row table]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[a class missing from a split]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[in-memory storage]",
        "test_faults.py::test_bad_input_exits_2_and_writes_nothing[duplicate CSV column names]",
        "test_malformed.py::test_generated_csv_tables_load_or_are_refused_cleanly",
        "test_blenders.py::test_auto_on_too_few_rows_to_cross_fit_says_it_chose_by_default",
    ],
    "10 storage passwords": [
        "test_prework.py::test_redact_hides_the_password_of_every_url",
        "test_prework.py::test_a_password_never_reaches_the_run_files_and_the_run_resumes_and_reads",
    ],
    "11 symbolic links out of a run": [
        "test_integrity.py::test_a_symlinked_trial_directory_is_refused_before_resume",
        "test_integrity.py::test_a_symlinked_ensembles_folder_is_refused_before_any_work",
    ],
    "12 a SIGKILLed driver and its Ray processes": [
        "test_faults.py::test_driver_sigkill_then_resume_loses_and_duplicates_nothing[during_trial]",
        "test_faults.py::test_driver_sigkill_then_resume_loses_and_duplicates_nothing[kill_after_files:3]",
        "test_faults.py::test_driver_sigkill_then_resume_loses_and_duplicates_nothing[kill_after_commit:3]",
        "test_faults.py::test_driver_sigkill_then_resume_loses_and_duplicates_nothing[kill_after_trial:3]",
        "test_faults.py::test_driver_killed_during_setup_is_refused_then_resumed",
        "test_faults.py::test_a_second_driver_on_a_busy_run_is_refused",
    ],
}  # fmt: skip


def _parametrized_ids(fn: Any) -> set[str]:
    """The ids pytest gives the rows of ``fn``'s one-argument parametrize marks."""
    ids: set[str] = set()
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            for value in mark.args[1]:
                ids.add(value.id if hasattr(value, "id") and value.id else str(value))
                if hasattr(value, "values"):
                    ids.update(str(v) for v in value.values)
    return ids


def test_every_case_of_issue_16_names_tests_that_exist():
    """The table above (and docs/faults.md, which quotes it) cannot name a test or a row
    that was renamed or removed."""
    import importlib

    assert sorted(int(case.split()[0]) for case in ISSUE_16) == list(range(1, 13))
    for case, nodes in ISSUE_16.items():
        assert nodes, case
        for node in nodes:
            file, _, name = node.partition("::")
            func, _, row = name.partition("[")
            fn = getattr(importlib.import_module(f"tests.{file.removesuffix('.py')}"), func, None)
            assert callable(fn), f"{case}: {node} does not exist"
            if row:
                assert row.rstrip("]") in _parametrized_ids(fn), f"{case}: {node}: no such row"


# the drills that break a running or finished service (docs/faults.md, "Figures")
FAULT_DRILLS = (
    test_driver_sigkill_then_resume_loses_and_duplicates_nothing,
    test_driver_killed_during_setup_is_refused_then_resumed,
    test_kill_and_resume_repeats_no_configuration,
    test_a_second_driver_on_a_busy_run_is_refused,
    test_a_lost_or_replaced_study_storage_is_refused,
    test_worker_killed_mid_trial_is_retried_or_failed_with_reason,
    test_every_kind_of_failing_trial_is_recorded_and_the_study_goes_on,
    test_all_failing_trials_stop_the_study_with_exit_1,
    test_two_ensemble_builds_with_one_name_at_once,
    test_ensembles_build_refuses_bad_runs_with_exit_2,
    test_resume_moves_damaged_trials_aside_and_runs_them_again,
    test_a_model_refused_by_keras_safe_mode_is_one_line_naming_the_file,
    test_ensembles_predict_with_a_model_refused_by_safe_mode_exits_2,
    _cv.test_driver_sigkilled_in_the_middle_of_a_trials_folds_resumes_losing_nothing,
)


def _n_cases(fn: Any) -> int:
    """How many test cases pytest makes of ``fn`` (the product of its parametrize rows)."""
    n = 1
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            n *= len(mark.args[1])
    return n


def test_docs_quote_the_figures_of_the_tables():
    """docs/faults.md's figures are counted from the tables and settings, not written by
    hand: the bad inputs, the damaged-file cases, the generated inputs and the drills."""
    from tests.test_malformed import MAX_EXAMPLES

    text = (ROOT / "docs" / "faults.md").read_text()
    outcomes = collections.Counter(
        "works" if v == "ok" else "repaired" if v == "repaired" else "refused with one line"
        for readers, build, resume in DAMAGED_FILES.values()
        for v in (readers, readers, readers, build, resume)
    )
    figures = dict(outcomes) | {
        "bad inputs written by hand": len(BAD_INPUT),
        "damaged-file cases": len(DAMAGED_FILES) * len(DAMAGE_COMMANDS),
        "generated malformed inputs": 2 * MAX_EXAMPLES,
        "fault drills": sum(_n_cases(fn) for fn in FAULT_DRILLS),
        "cases of issue 16": len(ISSUE_16),
    }
    for what, n in figures.items():
        assert f"**{n}** {what}" in text, f"docs/faults.md should say **{n}** {what}"
