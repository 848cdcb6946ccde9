"""Cross-validated trials (``split.folds``): one model per fold of any trainer, out-of-fold
predictions for every labelled row, test predictions averaged over the folds, the value on
the out-of-fold predictions, pruning after a fold, and a driver killed mid-fold that resumes
losing nothing (hpsearch/search/folds.py, docs/run-directory.md "Cross-validated runs")."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

import hpsearch
from hpsearch.cli.app import main
from hpsearch.core import metrics
from hpsearch.core.data import fold_rows, load_prepared, prepare
from hpsearch.core.errors import UserError
from hpsearch.core.spec import load_spec
from hpsearch.core.store import RunDir
from hpsearch.search.driver import run_search
from hpsearch.search.folds import cv_data, run_folds
from hpsearch.search.trial import COMPLETE, FAIL, PRUNED, TrialPayload, TrialResult
from tests.conftest import make_spec_dict, write_spec

RECORDER = "tests.trial_fns:fold_recorder"
PAUSE = "tests.trial_fns:fold_pause"
BARRIER = "tests.trial_fns:fold_barrier"
CRASH = "hpsearch.search.testing:crash_worker"
ORACLE = "hpsearch.search.testing:oracle"
INSTANT = "hpsearch.search.testing:instant"

TASKS = {  # task -> (table, metric)
    "binary": ("sklearn:breast_cancer", "log_loss"),
    "multiclass": ("sklearn:iris", "log_loss"),
    "regression": ("sklearn:diabetes", "rmse"),
}


def _cv_spec(
    tmp_path: Path, task: str = "binary", folds: int = 3, test_rows: int = 0, **overrides: Any
) -> dict:
    """A cross-validated spec on a small sklearn table; ``test_rows``: a test table of that
    many rows (the first rows' features)."""
    table, metric = TASKS[task]
    data = {"train": table, "target": "target", "task": task}
    if test_rows:
        import sklearn.datasets as skd

        frame = getattr(skd, f"load_{table.split(':')[1]}")(as_frame=True).frame
        data["train"] = str(tmp_path / "train.csv")
        data["test"] = str(tmp_path / "test.csv")
        frame.to_csv(data["train"], index=False)
        frame.drop(columns="target").head(test_rows).to_csv(data["test"], index=False)
    return make_spec_dict(
        tmp_path,
        data=data,
        metric=metric,
        split={"folds": folds, "seed": 0},
        sampler={"name": "random", "seed": 0},
        **overrides,
    )


def _row_hashes(x: dict[str, np.ndarray]) -> list[str]:
    """As tests.trial_fns.fold_recorder hashes its rows."""
    n = len(next(iter(x.values())))
    flat = np.hstack([np.asarray(x[k], dtype=np.float64).reshape(n, -1) for k in sorted(x)])
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in flat]


def _payload(prepared: Any, metric: str, folds: int, **kw: Any) -> TrialPayload:
    return TrialPayload(
        number=kw.pop("number", 0),
        params=kw.pop("params", {"learning_rate": 0.01}),
        family="dense",
        metric=metric,
        task=prepared.task,
        seed=kw.pop("seed", 5),
        training=kw.pop("training", {}),
        inputs=prepared.input_spec.to_dict(),
        outputs=prepared.output_spec.to_dict(),
        splits=("oof",),
        folds=folds,
        **kw,
    )


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, parallel",
    [("binary", True), ("multiclass", True), ("regression", True), ("binary", False)],
)
def test_every_labelled_row_is_predicted_once_by_the_fold_model_that_did_not_see_it(
    ray_session, tmp_path, task, parallel
):
    """Through the driver, a trainer that records what each fold got: fold k trained and
    early-stopped on every row but its own (its inner slice is fold_rows' slice), was never
    given the held rows' targets, and its out-of-fold predictions land on exactly its held
    rows; test = the mean of the fold models; value = the metric on all out-of-fold rows."""
    k = 3
    spec = load_spec(
        _cv_spec(
            tmp_path,
            task,
            folds=k,
            budget={"n_trials": 2},
            test_rows=25,
            resources={"parallel_folds": parallel},
        )
    )
    fake = tmp_path / "fake"
    fake.mkdir()
    summary = run_search(
        spec, trial_fn=RECORDER, trial_options={"fake_dir": str(fake)}, progress=False
    )
    assert summary.n_complete == 2
    prepared = load_prepared(spec.output, spec)
    y = prepared.y["train"]
    fold_of = prepared.fold_of
    assert prepared.folds == k and len(fold_of) == len(y)
    hashes = np.array(_row_hashes(prepared.x["train"]))
    run = hpsearch.load_run(spec.output)
    split = json.loads((Path(spec.output) / "data" / "split.json").read_text())
    for rec in RunDir(spec.output).trials(COMPLETE):
        n = rec.number
        seeds = set()
        for fold in range(k):
            got = json.loads((fake / f"fold-{n}-{fold}.json").read_text())
            train, valid, held = fold_rows(fold_of, fold, y, prepared.task, 0.1, split["seed"])
            assert got["y"] == ["train", "valid"], "the held rows' targets reached the trainer"
            assert got["x"] == ["oof", "test", "train", "valid"]
            assert got["splits"] == ["valid", "oof", "test"] and got["pruning"] is False
            assert (got["fold"], got["folds"]) == (fold, k)
            assert got["tensorboard"] is (fold == 0)
            seeds.add(got["seed"])
            # exactly the rows of fold_rows, in order: train, the inner slice, the held rows
            assert got["train"] == hashes[train].tolist()
            assert got["valid"] == hashes[valid].tolist()
            assert got["oof"] == hashes[held].tolist()
            assert np.allclose(got["y_train"], y[train])
            seen = collections.Counter(got["train"] + got["valid"])
            assert seen == collections.Counter(hashes[fold_of != fold].tolist())
        assert len(seeds) == k
        oof = run.predictions(n, "oof")
        assert oof.shape[0] == len(y)
        made_by = oof[:, 0] if oof.ndim == 2 else oof
        # each row's prediction names the fold model that made it: the one that held it out
        assert np.allclose(made_by, (fold_of + 1) / (k + 2))
        assert rec.value == pytest.approx(metrics.score(spec.metric, y, oof))
        test = run.predictions(n, "test")  # the mean of the fold models' test predictions
        assert test.shape[0] == 25
        made = test[:, 0] if test.ndim == 2 else test
        assert np.allclose(made, np.mean([(f + 1) / (k + 2) for f in range(k)]))
        assert rec.info["metrics"] == {spec.metric: rec.value}
        entries = rec.info["folds"]
        assert [e["fold"] for e in entries] == list(range(k))
        for e in entries:
            held = fold_of == e["fold"]
            assert e["value"] == pytest.approx(metrics.score(spec.metric, y[held], oof[held]))
            assert (e["epochs"], e["best_epoch"]) == (2, 1)
            assert e["n_oof"] == held.sum() and e["n_train"] + e["n_valid"] == (~held).sum()
            assert e["valid_value"] is not None and e["duration_s"] >= 0
        assert rec.info["cv"] == {"folds": k, "folds_fingerprint": split["folds_fingerprint"]}
        assert rec.info["epochs"] == 2 * k
        if task == "regression":
            assert rec.info["fold_target_scaling"] == [[float(f), 1.0] for f in range(k)]
            assert rec.info["target_scaling"] is None
        assert rec.info["batch_size"] == 32  # the trainer's other extras are kept
        assert rec.info.get("parallel_folds", False) is parallel
        names = set(rec.info["files"])
        assert names == {"oof_pred.npy", "test_pred.npy", "history.csv"} | {
            f"model_fold{f}.keras" for f in range(k)
        }
        for f in range(k):
            assert (rec.path / f"model_fold{f}.keras").read_bytes() == f"model of fold {f}".encode()
        for absent in ("model.keras", "valid_pred.npy", "holdout_pred.npy"):
            assert not (rec.path / absent).exists()
        history = pd.read_csv(rec.path / "history.csv")
        assert list(history.columns[:2]) == ["fold", "epoch"]
        assert history["fold"].tolist() == [f for f in range(k) for _ in range(2)]
    rows = run.trials()
    assert all(len(v) == k for v in rows["fold_values"])


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_the_oracle_and_instant_trainers_run_cross_validated(ray_session, tmp_path, task):
    """The cheap test trainers predict the oof split of each fold: the oracle from a model
    fitted on the fold's training rows (better than the class prior), instant from the
    prior; the readers and the CLI show the run as cross-validated."""
    spec = load_spec(_cv_spec(tmp_path, task, budget={"n_trials": 2}))
    run_search(spec, trial_fn=ORACLE, progress=False)
    run = hpsearch.load_run(spec.output)
    y = load_prepared(spec.output, spec).y["train"]
    for n in (0, 1):
        oof = run.predictions(n, "oof")
        assert oof.shape[0] == len(y)
        value = metrics.score(spec.metric, y, oof)
        assert value == pytest.approx(run.trials().loc[n, "value"])
    best = run.best()
    prior = _prior_score(spec.metric, task, y)
    assert best["value"] < prior  # log_loss and rmse: the oracle learns something
    assert best["folds"] == 3 and len(best["fold_values"]) == 3
    assert best["model"] is None and best["fold_models"] == []  # the oracle saves no model
    assert run.status()["folds"] == 3

    other = tmp_path / "instant"
    other.mkdir()
    spec2 = load_spec(_cv_spec(other, task, budget={"n_trials": 2}))
    summary = run_search(spec2, trial_fn=INSTANT, progress=False)
    assert summary.n_complete == 2
    oof = hpsearch.load_run(spec2.output).predictions(0, "oof")
    assert oof.shape[0] == len(y)


def _prior_score(metric: str, task: str, y: np.ndarray) -> float:
    if task == "regression":
        return metrics.score(metric, y, np.full(len(y), y.mean()))
    freq = np.bincount(y) / len(y)
    pred = np.tile(freq, (len(y), 1)) if task == "multiclass" else np.full(len(y), freq[1])
    return metrics.score(metric, y, pred)


@pytest.mark.slow
def test_status_trials_and_best_show_a_cross_validated_run(ray_session, tmp_path, capsys):
    spec = load_spec(_cv_spec(tmp_path, "binary", folds=4, budget={"n_trials": 2}))
    run_search(spec, trial_fn=ORACLE, progress=False)
    capsys.readouterr()
    assert main(["status", spec.output]) == 0
    out = capsys.readouterr().out
    assert "split: 4-fold CV (values: log_loss on the out-of-fold predictions)" in out
    assert main(["trials", spec.output]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "oof value" in table[0] and "folds" in table[0]
    assert all(" 4/4 " in line for line in table[1:])
    assert main(["trials", spec.output, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(len(r["fold_values"]) == 4 for r in rows)
    assert main(["best", spec.output]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["folds"] == 4 and best["model"] is None


# --------------------------------------------------------------------------- the fold runner


def _prepared(tmp_path: Path, task: str = "binary", folds: int = 3) -> tuple[Any, Any, dict]:
    spec = load_spec(_cv_spec(tmp_path, task, folds=folds))
    prepared = prepare(spec)
    return spec, prepared, cv_data(prepared.x, prepared.y, prepared.split)


class _Reporter:
    """Records reports; asks to stop at step ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.reports: list[tuple[int, float]] = []
        self.stop_at = stop_at

    def report(self, step: int, value: float) -> bool:
        self.reports.append((step, value))
        return step == self.stop_at

    def wait_for_answer(self, timeout: float = 300.0, poll: float = 0.02) -> bool:
        return bool(self.reports) and self.reports[-1][0] == self.stop_at


def test_pruning_reports_the_out_of_fold_metric_after_each_fold_and_stops(tmp_path):
    from hpsearch.search.testing import oracle

    spec, prepared, data = _prepared(tmp_path)
    reporter = _Reporter(stop_at=1)
    payload = _payload(prepared, spec.metric, 3, pruning=True)
    result = run_folds(oracle, payload, data, reporter)
    assert result.state == PRUNED
    assert [e["fold"] for e in result.extra["folds"]] == [0, 1]
    assert [step for step, _ in reporter.reports] == [0, 1]
    full = run_folds(oracle, _payload(prepared, spec.metric, 3), data, _Reporter())
    oof, y, fold_of = full.predictions["oof"], prepared.y["train"], prepared.fold_of
    for step, value in reporter.reports:  # the metric on the folds done so far
        rows = fold_of <= step
        assert value == pytest.approx(metrics.score(spec.metric, y[rows], oof[rows]))
    assert result.value == pytest.approx(reporter.reports[-1][1])
    assert not result.predictions and not result.fold_models
    assert {row["fold"] for row in result.history} == {0, 1}


def test_a_failing_fold_fails_the_trial_naming_the_fold(tmp_path):
    spec, prepared, data = _prepared(tmp_path)

    def fails_in_fold_1(payload: TrialPayload, fdata: Any, reporter: Any) -> TrialResult:
        if payload.fold == 1:
            raise RuntimeError("no memory left")
        n = len(fdata["x"]["oof"]["numeric"])
        preds = {"valid": np.full(len(fdata["y"]["valid"]), 0.5), "oof": np.full(n, 0.5)}
        return TrialResult(payload.number, COMPLETE, value=0.5, predictions=preds)

    result = run_folds(fails_in_fold_1, _payload(prepared, spec.metric, 3), data, _Reporter())
    assert result.state == FAIL and result.reason == "exception"
    assert result.error == "fold 1 of 3: RuntimeError: no memory left"
    assert "fails_in_fold_1" in result.traceback
    assert [e["fold"] for e in result.extra["folds"]] == [0]

    def no_oof(payload: TrialPayload, fdata: Any, reporter: Any) -> TrialResult:
        return TrialResult(payload.number, COMPLETE, value=0.5)

    result = run_folds(no_oof, _payload(prepared, spec.metric, 3), data, _Reporter())
    assert result.state == FAIL
    assert result.error.startswith("fold 0 of 3: the trainer returned no oof predictions")


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [True, False])
def test_the_pruner_stops_cross_validated_trials_after_a_fold(ray_session, tmp_path, parallel):
    """Median pruning through the driver: trials worse than the median after fold 1 stop
    there, recorded PRUNED with the folds they finished and no predictions."""
    spec = load_spec(
        _cv_spec(
            tmp_path,
            "binary",
            folds=4,
            budget={"n_trials": 10},
            pruner="median",
            resources={"max_concurrent": 1, "parallel_folds": parallel},
        )
    )
    summary = run_search(spec, trial_fn=ORACLE, progress=False)
    assert summary.n_pruned >= 1 and summary.n_complete >= 3
    for rec in RunDir(spec.output).trials(PRUNED):
        done = [e["fold"] for e in rec.info["folds"]]
        assert 2 <= len(done) < 4 and done == list(range(len(done)))
        assert not (rec.path / "oof_pred.npy").exists()
    for rec in RunDir(spec.output).trials(COMPLETE):
        assert len(rec.info["folds"]) == 4


@pytest.mark.slow
def test_the_folds_of_one_trial_run_side_by_side_on_free_slots(ray_session, tmp_path):
    """With parallel_folds, a trial's three folds take three worker slots at once: each
    fold waits until all three have started, which never happens one after another."""
    spec = load_spec(
        _cv_spec(tmp_path, "binary", budget={"n_trials": 2}, resources={"max_concurrent": 3})
    )
    fake = tmp_path / "fake"
    fake.mkdir()
    options = {"fake_dir": str(fake), "fake_timeout_s": 120}
    summary = run_search(spec, trial_fn=BARRIER, trial_options=options, progress=False)
    assert (summary.n_complete, summary.n_failed) == (2, 0)
    for rec in RunDir(spec.output).trials(COMPLETE):
        assert rec.info["parallel_folds"] is True
        assert [e["fold"] for e in rec.info["folds"]] == [0, 1, 2]


def test_a_trials_folds_take_the_free_slots_before_a_new_trial():
    """The runner's bookkeeping: a 3-fold trial on 2 slots leaves no slot for a new trial
    until its last fold has a slot; each fold that ends gives its slot to the next fold."""
    from hpsearch.search.runner import TrialRunner

    runner = TrialRunner(max_concurrent=2, warm_workers=False)
    runner.cv_targets = (np.zeros(9), np.arange(9) % 3)
    submitted: list[tuple[int, int | None]] = []
    runner._submit = lambda payload, fold=None, call=None: (  # no Ray: record, a slot
        submitted.append((payload.number, fold)),
        runner.in_flight.__setitem__(object(), _Held(payload, fold)),
    )
    payload = TrialPayload(0, {}, "dense", "rmse", "regression", 0, {}, {}, {}, folds=3)
    assert runner.free_slots() == 2
    runner.submit(payload)
    assert submitted == [(0, 0), (0, 1)] and runner.free_slots() == -1
    runner.in_flight.pop(next(iter(runner.in_flight)))  # fold 0 ends
    runner.folded[0].running.discard(0)
    runner._dispatch_folds()
    assert submitted[-1] == (0, 2) and runner.free_slots() == 0


def test_the_time_left_to_the_deadline_is_split_over_the_rounds_of_folds():
    """A fold that starts gets the time left to its trial's deadline divided by the rounds
    of folds still to run (the folds left, slots at a time): a trial that cannot finish
    before the deadline has its folds cut alike, not its last ones cut to one round."""
    from hpsearch.search.folds import fold_deadline

    assert fold_deadline(100.0, 5, 2, now=10.0) == pytest.approx(40.0)  # 3 rounds: 30 s
    assert fold_deadline(100.0, 4, 2, now=10.0) == pytest.approx(55.0)  # 2 rounds
    assert fold_deadline(100.0, 5, 1, now=10.0) == pytest.approx(28.0)  # one at a time
    assert fold_deadline(100.0, 1, 2, now=10.0) == 100.0  # the last round: all of it
    assert fold_deadline(100.0, 5, 2, now=120.0) == 120.0  # past it: stop at once
    assert fold_deadline(None, 5, 2, now=10.0) is None  # no time budget: no deadline


def test_folds_one_after_another_each_get_their_part_of_the_time_left(tmp_path):
    """Sequential folds (``parallel_folds: false``): fold k's trainer sees the deadline
    ``now + (deadline - now) / (K - k)``; the trial's payload keeps its own."""
    from hpsearch.search.testing import oracle

    spec, prepared, data = _prepared(tmp_path)
    seen: list[tuple[float, float]] = []

    def timed(payload, fdata, reporter):
        seen.append((time.time(), payload.training["deadline"]))
        return oracle(payload, fdata, reporter)

    deadline = time.time() + 90.0
    payload = _payload(prepared, spec.metric, 3, training={"deadline": deadline})
    result = run_folds(timed, payload, data, _Reporter())
    assert result.state == COMPLETE and payload.training["deadline"] == deadline
    for k, (now, got) in enumerate(seen):
        assert got == pytest.approx(now + (deadline - now) / (3 - k), abs=0.5)
    assert seen[-1][1] == pytest.approx(deadline)


def test_parallel_folds_get_the_deadline_of_their_round():
    """Folds as separate calls: 3 folds on 2 slots are 2 rounds, so the first two calls
    may run to half the time left; the last fold, alone in its round, to the deadline."""
    from hpsearch.search.runner import TrialRunner

    runner = TrialRunner(max_concurrent=2, warm_workers=False)
    runner.cv_targets = (np.zeros(9), np.arange(9) % 3)
    calls: dict[int, float] = {}
    runner._submit = lambda payload, fold=None, call=None: (
        calls.__setitem__(fold, call.training["deadline"]),
        runner.in_flight.__setitem__(object(), _Held(payload, fold)),
    )
    deadline = time.time() + 100.0
    payload = TrialPayload(
        0, {}, "dense", "rmse", "regression", 0, {"deadline": deadline}, {}, {}, folds=3
    )
    start = time.time()
    runner.submit(payload)
    assert sorted(calls) == [0, 1]
    for fold in (0, 1):
        assert calls[fold] == pytest.approx(start + (deadline - start) / 2, abs=0.5)
    runner.in_flight.pop(next(iter(runner.in_flight)))  # fold 0 ends
    runner.folded[0].running.discard(0)
    runner._dispatch_folds()
    assert calls[2] == pytest.approx(deadline)
    assert runner.folded[0].payload.training["deadline"] == deadline  # the trial's own


@pytest.mark.slow
def test_a_fold_whose_worker_dies_is_retried_or_fails_the_trial_naming_the_fold(
    ray_session, tmp_path
):
    """Folds as separate calls: a fold whose worker dies once is run again by Ray on the
    restarted worker and the trial completes (``worker_restarted``); one whose worker dies on
    every attempt fails its trial with reason ``worker died``, the error naming the fold."""
    spec = load_spec(
        _cv_spec(tmp_path, "binary", budget={"n_trials": 3}, resources={"max_concurrent": 1})
    )
    options = {"fake_dir": str(tmp_path), "fake_crash_always": [1]}
    summary = run_search(spec, trial_fn=CRASH, progress=False, trial_options=options)
    assert (summary.n_complete, summary.n_failed) == (2, 1)
    deaths = {p.name: p.read_text().count("died") for p in tmp_path.glob("crashed-*")}
    assert deaths == {"crashed-0": 1, "crashed-1": 2, "crashed-2": 1}
    recs = {r.number: r.info for r in RunDir(spec.output).trials()}
    assert [n for n, i in recs.items() if i.get("worker_restarted")] == [0, 2]
    assert (recs[1]["state"], recs[1]["reason"]) == ("FAIL", "worker died")
    assert recs[1]["error"] == (
        "fold 0 of 3: ActorDiedError: The actor died unexpectedly before finishing this task."
    )
    assert recs[1]["folds"] == []
    for n in (0, 2):
        assert [e["fold"] for e in recs[n]["folds"]] == [0, 1, 2]


def test_cancel_returns_each_trial_whose_folds_run_once():
    from hpsearch.search.runner import TrialRunner

    runner = TrialRunner(max_concurrent=2, warm_workers=False)
    runner.cv_targets = (np.zeros(9), np.arange(9) % 3)
    runner._submit = lambda payload, fold=None, call=None: runner.in_flight.__setitem__(
        object(), _Held(payload, fold)
    )
    payload = TrialPayload(4, {}, "dense", "rmse", "regression", 0, {}, {}, {}, folds=3)
    runner.submit(payload)
    assert [p.number for p in runner.cancel_all()] == [4]
    assert not runner.folded and not runner.in_flight and runner.free_slots() == 2


class _Held:
    def __init__(self, payload: TrialPayload, fold: int | None) -> None:
        self.payload, self.fold, self.begun = payload, fold, True


# --------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_hpsearch_run_resume_continues_a_cross_validated_run(ray_session, tmp_path, capsys):
    spec_path = write_spec(
        tmp_path, split={"folds": 3, "seed": 0}, budget={"n_trials": 2}, sampler={"name": "random"}
    )
    args = ["run", str(spec_path), "--quiet", "--trial-fn", ORACLE]
    assert main(args) == 0
    run_dir = tmp_path / "run"
    # a damaged out-of-fold file is found by --resume: the trial is moved aside and run again
    oof = run_dir / "trials" / "00001" / "oof_pred.npy"
    oof.write_bytes(oof.read_bytes()[:-8] + b"\0" * 8)
    assert "oof prediction file" in RunDir(run_dir).trial_damage(1)
    spec = yaml.safe_load(spec_path.read_text())
    spec["budget"]["n_trials"] = 4
    spec_path.write_text(yaml.safe_dump(spec))
    assert main([*args, "--resume"]) == 0
    assert (run_dir / "damaged" / "trials" / "00001" / "oof_pred.npy").is_file()
    run = hpsearch.load_run(run_dir)
    rows = run.trials()
    counted = rows[(rows["state"] == "COMPLETE") & ~rows["interrupted"]]
    assert len(counted) == 4 and 1 not in set(counted["number"])
    n = len(load_prepared(run_dir, load_spec(spec_path)).y["train"])
    for number in counted["number"]:
        assert run.predictions(number, "oof").shape == (n,)
    # the folds are part of the run: a resume with other folds is refused
    spec["split"]["folds"] = 5
    spec_path.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    assert "differs from the stored" in capsys.readouterr().err


def _study(run_dir: Path) -> optuna.Study:
    rd = RunDir(run_dir)
    return optuna.load_study(study_name=rd.read_meta()["study_name"], storage=rd.storage_url())


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [True, False])
def test_driver_sigkilled_in_the_middle_of_a_trials_folds_resumes_losing_nothing(
    ray_session, tmp_path, capsys, parallel
):
    """The drill: trial 2 pauses in its fold 1 (fold 0 done); the driver is SIGKILLed
    then. Trial 2 has no trial.json; `hpsearch run --resume` runs its parameters again,
    whole, as a new trial, keeps the committed trials as they were, repeats no
    configuration, and every COMPLETE trial has an out-of-fold prediction for every
    labelled row."""
    from tests.test_faults import _driver

    spec_path = write_spec(
        tmp_path,
        split={"folds": 3, "seed": 0},
        budget={"n_trials": 5},
        sampler={"name": "tpe", "seed": 0},
        resources={"max_concurrent": 2, "parallel_folds": parallel},
    )
    run_dir, fake = tmp_path / "run", tmp_path / "fake"
    fake.mkdir()
    options = ["fake_dir=" + str(fake), "fake_pause_trial=2", "fake_pause_fold=1"]
    args = [f"--trial-option={o}" for o in options]
    proc = _driver(spec_path, ray_session, "--trial-fn", PAUSE, *args)
    deadline = time.time() + 300
    try:
        while not (fake / "paused").exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.time() < deadline, "trial 2 never reached its fold 1"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        (fake / "release").write_text("")  # a worker that outlives its driver ends too
    assert proc.returncode == -signal.SIGKILL
    killed = _study(run_dir)
    assert killed.trials[2].state == optuna.trial.TrialState.RUNNING
    assert not (run_dir / "trials" / "00002" / "trial.json").exists()
    before = {p.parent.name: p.read_bytes() for p in run_dir.glob("trials/*/trial.json")}
    first = {t.number: t.params for t in killed.trials}
    in_flight = [  # running, not committed: their parameters run again (2 among them)
        t.number
        for t in killed.trials
        if t.state == optuna.trial.TrialState.RUNNING
        and not (run_dir / "trials" / f"{t.number:05d}" / "trial.json").exists()
    ]
    assert 2 in in_flight

    capsys.readouterr()
    assert main(["run", str(spec_path), "--resume", "--quiet", "--trial-fn", PAUSE, *args]) == 0
    study = _study(run_dir)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    configs = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(set(configs)) == 5, "a configuration ran twice"
    for number in in_flight:  # the interrupted trials ran again, whole, exactly once
        again = [t for t in study.trials if t.user_attrs.get("requeued_from") == number]
        assert len(again) == 1 and again[0].state == optuna.trial.TrialState.COMPLETE
        # (a trial the kill caught while its parameters were being drawn keeps those drawn)
        assert first[number].items() <= again[0].params.items()
    assert first[2] == next(
        t.params for t in study.trials if t.user_attrs.get("requeued_from") == 2
    )
    rd = RunDir(run_dir)
    for name, data in before.items():  # committed trials neither lost nor rewritten
        assert (run_dir / "trials" / name / "trial.json").read_bytes() == data
    n = len(load_prepared(run_dir, load_spec(spec_path)).y["train"])
    for rec in rd.trials(COMPLETE):
        assert rec.predictions("oof").shape == (n,)
        assert [e["fold"] for e in rec.info["folds"]] == [0, 1, 2]
        assert rd.trial_damage(rec.number) is None
    assert sorted(r.number for r in rd.trials(COMPLETE)) == sorted(t.number for t in complete)
    assert not list(rd.trials_dir.rglob("*.tmp"))


# --------------------------------------------------------------------------- Keras


@pytest.mark.slow
def test_keras_early_stopping_watches_only_the_inner_slice(tmp_path, monkeypatch):
    """The keras trainer fits on the fold's training rows and validates (EarlyStopping and
    ReduceLROnPlateau watch val_loss) on the inner slice of fold_rows, never on the held
    rows, which it only predicts."""
    import keras

    from hpsearch.search.training import train_trial

    spec, prepared, data = _prepared(tmp_path, folds=2)
    seen: list[dict[str, Any]] = []
    fit = keras.Model.fit

    def spy(self, x=None, y=None, validation_data=None, callbacks=None, **kw):
        monitors = [getattr(c, "monitor", None) for c in callbacks or ()]
        seen.append({"x": x, "valid": validation_data[0], "monitors": monitors})
        return fit(self, x, y, validation_data=validation_data, callbacks=callbacks, **kw)

    monkeypatch.setattr(keras.Model, "fit", spy)
    payload = _payload(
        prepared,
        spec.metric,
        2,
        params={"n_layers": 1, "units": [8], "activation": "relu", "learning_rate": 0.01},
        training={"max_epochs": 2, "patience": 1, "batch_size": 64, "tensorboard": False},
    )
    result = run_folds(train_trial, payload, data, _Reporter())
    assert result.state == COMPLETE, result.error
    x_all, y = prepared.x["train"]["numeric"], prepared.y["train"]
    for fold, got in enumerate(seen):
        train, valid, held = fold_rows(prepared.fold_of, fold, y, prepared.task, 0.1, 0)
        assert np.array_equal(got["x"]["numeric"], x_all[train])
        assert np.array_equal(got["valid"]["numeric"], x_all[valid])
        assert not set(valid) & set(held) and not set(train) & set(held)
        assert "val_loss" in got["monitors"]
    assert len(seen) == 2 and len(result.fold_models) == 2


@pytest.mark.slow
def test_a_real_keras_cv_trial_saves_one_loadable_model_per_fold(ray_session, tmp_path):
    spec = load_spec(
        _cv_spec(
            tmp_path,
            "binary",
            folds=2,
            budget={"n_trials": 1},
            space="tabular_mlp",
            training={"max_epochs": 2, "patience": 1, "batch_size": 64},
            resources={"max_concurrent": 1},
        )
    )
    run = hpsearch.run(spec, progress=False)
    assert run.summary.n_complete == 1
    rec = RunDir(spec.output).read_trial(0)
    files = rec.info["files"]
    assert {"model_fold0.keras", "model_fold1.keras", "oof_pred.npy", "history.csv"} <= set(files)
    assert "model.keras" not in files
    for fold in (0, 1):
        data = (rec.path / f"model_fold{fold}.keras").read_bytes()
        assert hashlib.sha256(data).hexdigest() == files[f"model_fold{fold}.keras"]
        model = run.model(0, fold=fold)
        x = load_prepared(spec.output, spec).x["train"]
        held = load_prepared(spec.output, spec).fold_of == fold
        pred = model.predict({k: v[held] for k, v in x.items()}, verbose=0)
        pred = np.asarray(pred["output"] if isinstance(pred, dict) else pred)
        assert np.allclose(pred.reshape(-1), run.predictions(0, "oof")[held], atol=1e-5)
    entries = rec.info["folds"]
    assert [e["fold"] for e in entries] == [0, 1]
    assert all(1 <= e["epochs"] <= 2 and 1 <= e["best_epoch"] <= e["epochs"] for e in entries)
    from hpsearch.search.training import _has_tensorboard

    # fold 0's TensorBoard logs, when TensorBoard is installed
    assert (rec.path / "tb").is_dir() == _has_tensorboard()
    with pytest.raises(UserError, match=r"cross-validated.*fold=0 \.\. 1"):
        run.model(0)
    with pytest.raises(UserError, match=r"fold=2: trial 0 .* has 2 folds"):
        run.model(0, fold=2)
