"""End-to-end searches on Ray with cheap trial functions (no TensorFlow): samplers,
scheduling, failures, reproducibility, resume and run-directory safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpsearch.core.errors import RunDirError, StudyStopped
from hpsearch.core.spec import load_spec
from hpsearch.core.store import RunDir
from hpsearch.search.driver import run_search
from tests.conftest import ROOT, make_spec_dict, write_spec

ORACLE = "hpsearch.search.testing:oracle"
INSTANT = "hpsearch.search.testing:instant"
# trial functions that wait on a condition instead of sleeping (tests/trial_fns.py)
BARRIER = "tests.trial_fns:barrier"
HOLD = "tests.trial_fns:hold"
LOCKSTEP = "tests.trial_fns:lockstep"


DEADLINE_S = 300  # generous: waiting on a condition, a slow machine only takes longer


def _wait_for_driver(proc: subprocess.Popen, condition: Callable[[], bool]) -> None:
    """Poll until ``condition()`` holds; fail if the driver exits or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"driver exited early: {proc.stdout.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"condition not reached in {DEADLINE_S} s")
        time.sleep(0.05)


def _study(run_dir: Path) -> optuna.Study:
    rd = RunDir(run_dir)
    meta = rd.read_meta()
    return optuna.load_study(study_name=meta["study_name"], storage=rd.storage_url())


@pytest.mark.parametrize("sampler", ["tpe", "hyperopt-tpe", "random"])
def test_small_search_each_sampler(ray_session, tmp_path, sampler):
    spec = load_spec(
        make_spec_dict(tmp_path, sampler={"name": sampler, "seed": 1}, budget={"n_trials": 6})
    )
    summary = run_search(spec, trial_fn=ORACLE, progress=False)
    assert summary.n_complete == 6 and summary.n_failed == 0
    rd = RunDir(spec.output)
    recs = rd.trials("COMPLETE")
    assert [r.number for r in recs] == list(range(6))
    split = json.loads((rd.path / "data" / "split.json").read_text())
    for rec in recs:
        assert rec.predictions("valid").shape == (len(split["ids"]["valid"]),)
        assert rec.predictions("holdout").shape == (len(split["ids"]["holdout"]),)
        assert (rec.path / "history.csv").exists()
        assert rec.info["sampler"] == sampler
    study = _study(spec.output)
    assert len(study.trials) == 6
    assert summary.best_value == pytest.approx(min(t.value for t in study.trials))
    # the frozen spec and space, the data split and the preprocessing are all there
    for name in (
        "spec.yaml",
        "space.yaml",
        "run.json",
        "data/split.json",
        "data/preprocessor.json",
    ):
        assert (rd.path / name).exists(), name


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_a_pruner_stops_hopeless_trials_from_their_reported_epochs(ray_session, tmp_path, pruner):
    """Each epoch's validation value reaches the study while the trial runs; the pruner's
    answer stops the trial, which is recorded PRUNED with its history. The trial waits for
    the driver's answer after each report (``reporter.wait_for_answer``), so the pruner sees
    the same values in the same order on any machine."""
    epochs = 4
    spec = load_spec(
        make_spec_dict(
            tmp_path,
            sampler={"name": "random", "seed": 3},
            budget={"n_trials": 6},
            resources={"max_concurrent": 1},
            training={"max_epochs": epochs},
            pruner=pruner,
        )
    )
    options = {"fake_epochs": epochs}
    summary = run_search(spec, trial_fn=LOCKSTEP, progress=False, trial_options=options)
    study = _study(spec.output)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete and summary.n_complete == len(complete)
    assert summary.n_pruned == len(pruned)
    assert any(len(t.intermediate_values) < epochs for t in pruned)  # stopped before the end
    for t in study.trials:  # every epoch the trial ran was reported to the study
        assert sorted(t.intermediate_values) == list(range(len(t.intermediate_values)))
    for t in pruned:
        rec = RunDir(spec.output).read_trial(t.number)
        history = (rec.path / "history.csv").read_text().splitlines()
        # the trial stopped at the report the pruner answered: one history row per report
        assert rec.state == "PRUNED" and len(t.intermediate_values) == len(history) - 1
        assert rec.value == pytest.approx(t.intermediate_values[len(history) - 2])
    for t in complete:
        assert len(t.intermediate_values) == epochs


@pytest.mark.parametrize("name", ["keras", "hpsearch.search.training:train_trial"])
def test_the_keras_trainer_by_name_or_path(name):
    """Trainers resolve through the TRAINERS registry; the Keras one, by its name or its old
    full path, has its workers import Keras up front."""
    from hpsearch.search.runner import TrialRunner
    from hpsearch.search.training import train_trial
    from hpsearch.search.trial import DEFAULT_TRIAL_FN, resolve_trial_fn

    assert resolve_trial_fn(name) is train_trial
    assert TrialRunner(trial_fn=name).import_keras is True
    assert resolve_trial_fn(DEFAULT_TRIAL_FN) is train_trial


def test_other_trainers_resolve_as_module_function_without_keras():
    from hpsearch.core.registry import PluginError
    from hpsearch.search.runner import TrialRunner
    from hpsearch.search.testing import oracle
    from hpsearch.search.trial import resolve_trial_fn

    assert resolve_trial_fn(ORACLE) is oracle
    assert TrialRunner(trial_fn=ORACLE).import_keras is False
    assert TrialRunner(trial_fn=oracle).import_keras is False
    with pytest.raises(PluginError, match=r"unknown trainer 'kras' \(did you mean 'keras'\?\)"):
        resolve_trial_fn("kras")


def test_fractional_gpus_put_four_trials_in_flight(ray_session, tmp_path):
    """Four 0.5-GPU trials on two logical GPUs run at once: each trial waits until all four
    have started (``tests.trial_fns:barrier``), which only happens when they share the GPUs."""
    spec = load_spec(
        make_spec_dict(
            tmp_path,
            sampler={"name": "random", "seed": 0},
            budget={"n_trials": 4},
            resources={"cpus_per_trial": 0.5, "gpus_per_trial": 0.5, "max_concurrent": 4},
        )
    )
    gate = tmp_path / "gate"
    gate.mkdir()
    options = {"fake_dir": str(gate), "fake_together": 4}
    summary = run_search(spec, trial_fn=BARRIER, progress=False, trial_options=options)
    recs = RunDir(spec.output).trials("COMPLETE")
    assert summary.n_complete == 4 and len(recs) == 4, [r.info.get("error") for r in recs]
    starts = [r.info["started_at"] for r in recs]
    ends = [r.info["finished_at"] for r in recs]
    # all four overlapped: the last one started before the first one ended
    assert max(starts) < min(ends)
    gpu_ids = [tuple(r.info["gpu_ids"]) for r in recs]
    assert all(len(g) == 1 for g in gpu_ids)
    assert len({g[0] for g in gpu_ids}) == 2  # two trials per logical GPU


def test_failing_trial_is_recorded_and_study_completes(ray_session, tmp_path):
    spec = load_spec(
        make_spec_dict(tmp_path, budget={"n_trials": 6}, sampler={"name": "random", "seed": 0})
    )
    summary = run_search(
        spec, trial_fn=INSTANT, progress=False, trial_options={"fake_fail_every": 3}
    )
    assert summary.n_complete == 4 and summary.n_failed == 2
    failed = RunDir(spec.output).trials("FAIL")
    assert [r.number for r in failed] == [2, 5]
    assert failed[0].info["error"] == "RuntimeError: planned failure in trial 2"
    assert "Traceback" in failed[0].info["traceback"]
    assert failed[0].info["reason"] == "exception"


@pytest.mark.parametrize(
    ("option", "reason"),
    [("fake_nan_every", "non-finite loss"), ("fake_oom_every", "out of memory")],
)
def test_nan_and_oom_trials_are_marked(ray_session, tmp_path, option, reason):
    spec = load_spec(
        make_spec_dict(tmp_path, budget={"n_trials": 4}, sampler={"name": "random", "seed": 0})
    )
    summary = run_search(spec, trial_fn=INSTANT, progress=False, trial_options={option: 2})
    assert summary.n_failed == 2 and summary.n_complete == 2
    assert {r.info["reason"] for r in RunDir(spec.output).trials("FAIL")} == {reason}


def test_consecutive_failures_stop_the_study(ray_session, tmp_path):
    spec = load_spec(
        make_spec_dict(
            tmp_path,
            budget={"n_trials": 20},
            resources={"max_concurrent": 1, "max_failures": 3},
        )
    )
    with pytest.raises(
        StudyStopped,
        match=r"stopped after 3 consecutive failed trials \(resources.max_failures = 3\); last error: trial 2: exception: RuntimeError: every trial fails",
    ):
        run_search(spec, trial_fn=INSTANT, progress=False, trial_options={"fake_fail_all": True})
    assert len(RunDir(spec.output).trials("FAIL")) == 3


@pytest.mark.parametrize("sampler", ["tpe", "hyperopt-tpe", "random"])
def test_same_seed_same_configurations(ray_session, tmp_path, sampler):
    def configs(sub: str, seed: int) -> list[dict]:
        d = tmp_path / sub
        spec = load_spec(
            make_spec_dict(
                d,
                sampler={"name": sampler, "seed": seed, "n_startup_trials": 3},
                budget={"n_trials": 6},
                resources={"max_concurrent": 1},
            )
        )
        run_search(spec, trial_fn=INSTANT, progress=False)
        return [r.params for r in RunDir(spec.output).trials()]

    first = configs("a", 3)
    assert first == configs("b", 3)
    assert first != configs("c", 4)


def test_existing_run_dir_is_refused_without_resume(ray_session, tmp_path):
    spec = load_spec(make_spec_dict(tmp_path, budget={"n_trials": 2}))
    run_search(spec, trial_fn=INSTANT, progress=False)
    before = sorted(p.name for p in Path(spec.output).rglob("*"))
    with pytest.raises(RunDirError, match="already holds run 'bc-test'.*Fix: add --resume"):
        run_search(spec, trial_fn=INSTANT, progress=False)
    assert sorted(p.name for p in Path(spec.output).rglob("*")) == before


def test_resume_refuses_a_changed_space(ray_session, tmp_path):
    spec = load_spec(make_spec_dict(tmp_path, budget={"n_trials": 2}))
    run_search(spec, trial_fn=INSTANT, progress=False)
    changed = load_spec(make_spec_dict(tmp_path, budget={"n_trials": 2}, space="wide_deep"))
    with pytest.raises(RunDirError, match="cannot resume .*the space 'wide_deep' differs"):
        run_search(changed, resume=True, trial_fn=INSTANT, progress=False)


def test_recover_tells_committed_trials_and_requeues_the_others(tmp_path):
    """What a dead driver left RUNNING is settled without Ray: a trial whose trial.json was
    written is told what the file says; one without (its half-written directory removed) is
    recorded as re-queued, kept out of the budget, and its parameters are asked again."""
    from hpsearch.search.driver import counted_trials, recover
    from hpsearch.search.trial import TrialResult
    from search_spaces import load_space

    space = load_space("tabular_mlp")
    rd = RunDir(tmp_path / "run")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    trials = [study.ask() for _ in range(3)]
    configs = [space.sample_optuna(t) for t in trials]
    done, failed, lost = (t.number for t in trials)
    rd.write_trial(TrialResult(done, "COMPLETE", value=0.25, hostname="node-a"), configs[0])
    crash = TrialResult(failed, "FAIL", error="RuntimeError: boom", reason="exception")
    rd.write_trial(crash, configs[1])
    half = rd.trial_path(lost)  # the driver died while writing this trial's files
    half.mkdir(parents=True)
    (half / "valid_pred.npy").write_bytes(b"partial")

    assert recover(study, rd, space) == (2, 1)

    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[done].state == optuna.trial.TrialState.COMPLETE
    assert by_number[done].value == 0.25 and by_number[done].user_attrs["hostname"] == "node-a"
    assert by_number[failed].state == optuna.trial.TrialState.FAIL
    assert by_number[failed].user_attrs["error"] == "RuntimeError: boom"
    assert by_number[failed].user_attrs["reason"] == "exception"
    assert by_number[lost].state == optuna.trial.TrialState.FAIL
    assert by_number[lost].user_attrs["requeued"] is True
    assert not half.exists()
    assert sorted(t.number for t in counted_trials(study)) == [done, failed]
    waiting = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert [t.user_attrs["requeued_from"] for t in waiting] == [lost]
    again = study.ask()  # the re-queued parameters come back first
    assert space.sample_optuna(again) == configs[2]
    assert again.params == by_number[lost].params
    assert recover(study, rd, space) == (0, 1)  # only the trial just asked is RUNNING now


def test_resume_continues_up_to_budget(ray_session, tmp_path):
    spec = load_spec(make_spec_dict(tmp_path, budget={"n_trials": 3}))
    run_search(spec, trial_fn=ORACLE, progress=False)
    summary = run_search(spec, resume=True, n_trials=5, trial_fn=ORACLE, progress=False)
    assert summary.n_complete == 5
    assert [r.number for r in RunDir(spec.output).trials("COMPLETE")] == list(range(5))


@pytest.mark.slow
def test_sigkill_then_resume_loses_nothing(ray_session, tmp_path):
    spec_path = write_spec(
        tmp_path,
        budget={"n_trials": 8},
        resources={"max_concurrent": 2},
        sampler={"name": "tpe", "seed": 0},
    )
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "hpsearch.cli.app",
        "run",
        str(spec_path),
        "--quiet",
        "--address",
        ray_session,
        "--trial-fn",
        ORACLE,
        "--trial-option",
        "fake_sleep_s=1.0",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for_driver(proc, lambda: len(list(run_dir.glob("trials/*/trial.json"))) >= 3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("trials/*/trial.json")}
    assert len(before) >= 3

    spec = load_spec(spec_path)
    summary = run_search(
        spec, resume=True, trial_fn=ORACLE, progress=False, trial_options={"fake_sleep_s": 0.1}
    )
    assert summary.n_complete == 8
    rd = RunDir(run_dir)
    after = {r.path.name: r.info for r in rd.trials()}
    for name, info in before.items():  # nothing finished was lost or rewritten
        assert after[name]["value"] == info["value"]
    complete = rd.trials("COMPLETE")
    assert len(complete) == 8
    study = _study(run_dir)
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.number for t in told) == sorted(r.number for r in complete)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    split = json.loads((run_dir / "data" / "split.json").read_text())
    for rec in complete:  # every finished trial kept readable predictions
        assert rec.predictions("valid").shape == (len(split["ids"]["valid"]),)
        assert rec.predictions("holdout").shape == (len(split["ids"]["holdout"]),)


@pytest.mark.parametrize("warm", [True, False])
def test_warm_actors_are_reused_fresh_tasks_are_not(ray_session, tmp_path, warm):
    spec = load_spec(
        make_spec_dict(
            tmp_path,
            budget={"n_trials": 4},
            resources={"max_concurrent": 1, "warm_workers": warm},
        )
    )
    run_search(spec, trial_fn=INSTANT, progress=False)
    pids = [r.info["pid"] for r in RunDir(spec.output).trials("COMPLETE")]
    assert len(pids) == 4
    # one warm actor serves every trial; fresh mode starts a process per trial (max_calls=1)
    assert len(set(pids)) == (1 if warm else 4)


@pytest.mark.slow
def test_real_keras_trials_write_model_history_and_tensorboard(ray_session, tmp_path):
    import keras

    spec = load_spec(
        make_spec_dict(tmp_path, budget={"n_trials": 2}, training={"max_epochs": 2, "patience": 1})
    )
    summary = run_search(spec, progress=False)
    assert summary.n_complete == 2, RunDir(spec.output).trials()[0].info.get("error")
    for rec in RunDir(spec.output).trials("COMPLETE"):
        model = keras.saving.load_model(rec.model_path, safe_mode=True)
        x = {k: v[:5] for k, v in _valid_inputs(spec).items()}
        raw = model.predict(_model_inputs(model, x), verbose=0)
        out = _head_prediction(raw, "output", "binary")
        np.testing.assert_allclose(out, rec.predictions("valid")[:5], rtol=1e-4, atol=1e-5)
        history = (rec.path / "history.csv").read_text().splitlines()
        assert history[0].startswith("epoch") and len(history) == 1 + rec.info["epochs"]
        tb = list((rec.path / "tb").rglob("*tfevents*"))
        assert tb, "no TensorBoard event files"
        assert any("hparams" in str(p) for p in tb), "hyperparameters not logged (HParams)"


def _model_inputs(model, x):
    from hpsearch.search.training import _model_inputs as pick

    return pick(model, x)


def _head_prediction(raw, head, task):
    from hpsearch.search.training import _head_prediction as head_pred

    return head_pred(raw, head, task)


def _valid_inputs(spec):
    from hpsearch.core.data import prepare

    return prepare(spec).x["valid"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_cancels_records_and_requeues_trials_in_flight(ray_session, tmp_path, sig):
    """SIGINT (Ctrl-C, `hpsearch stop`) or SIGTERM (a scheduler's stop): exit 130, no trial
    left RUNNING, interrupted trials queued again, and --resume finishes the budget without
    re-running a finished one."""
    spec_path = write_spec(tmp_path, budget={"n_trials": 6}, resources={"max_concurrent": 2})
    run_dir = tmp_path / "run"
    gate = tmp_path / "gate"
    gate.mkdir()
    # trials 0 and 1 finish; 2 and 3 start and hold until interrupted (tests/trial_fns.py)
    cmd = [sys.executable, "-m", "hpsearch.cli.app", "run", str(spec_path), "--quiet"]
    cmd += ["--address", ray_session, "--trial-fn", HOLD]
    cmd += ["--trial-option", f"fake_dir={gate}", "--trial-option", "fake_free=2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    committed = [run_dir / "trials" / f"{n:05d}" / "trial.json" for n in (0, 1)]
    holding = [gate / f"started-{n}" for n in (2, 3)]
    _wait_for_driver(proc, lambda: all(p.exists() for p in committed + holding))
    proc.send_signal(sig)  # trials 2 and 3 are in flight, 0 and 1 told to the study
    out = proc.communicate(timeout=DEADLINE_S)[0].decode()
    assert proc.returncode == 130, out[-2000:]
    assert "cancelled and recorded" in out and "--resume" in out
    study = _study(run_dir)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert sorted(t.number for t in interrupted) == [2, 3], "trials in flight not recorded"
    assert [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE] == [
        0,
        1,
    ]
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]) == len(
        interrupted
    )
    finished = {r.number: r.info["value"] for r in RunDir(run_dir).trials("COMPLETE")}

    summary = run_search(load_spec(spec_path), resume=True, trial_fn=ORACLE, progress=False)
    assert summary.n_complete == 6
    after = {r.number: r.info["value"] for r in RunDir(run_dir).trials("COMPLETE")}
    assert all(after[n] == v for n, v in finished.items())
    # each interrupted trial's parameters ran again exactly once
    requeued = [t.user_attrs.get("requeued_from") for t in _study(run_dir).trials]
    assert sorted(n for n in requeued if n is not None) == sorted(t.number for t in interrupted)
