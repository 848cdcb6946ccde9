"""The search loop's hooks: which callback is called when, with what, and what a failing
callback does to the run (nothing but a warning)."""

from __future__ import annotations

import warnings

import optuna
import pytest

from hpsearch.core.errors import StudyStopped
from hpsearch.core.spec import load_spec
from hpsearch.core.store import RunDir
from hpsearch.search.callbacks import Callback, CallbackWarning, Hooks
from hpsearch.search.driver import Interrupted, SearchLoop, run_search
from tests.conftest import make_spec_dict

INSTANT = "hpsearch.search.testing:instant"


class Recorder(Callback):
    """Records every hook call with what the run directory and the study held at that time."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.loop: SearchLoop | None = None

    def on_search_start(self, loop: SearchLoop) -> None:
        self.loop = loop
        self.calls.append(("search_start", loop.total, len(loop.study.trials)))

    def on_trial_start(self, payload) -> None:
        self.calls.append(("trial_start", payload.number))

    def on_trial_end(self, payload, result) -> None:
        assert self.loop is not None
        rec = RunDir(self.loop.run_dir).read_trial(payload.number)
        told = self.loop.study.get_trials(deepcopy=False)[payload.number]
        self.calls.append(
            (
                "trial_end",
                payload.number,
                result.state,
                result.value,
                None if rec is None else (rec.state, rec.value),
                (told.state.name, told.value),
            )
        )

    def on_search_end(self, summary) -> None:
        self.calls.append(("search_end", summary.n_complete, summary.n_failed, summary.stopped))


class Raising(Callback):
    def on_search_start(self, loop):
        raise RuntimeError("start hook broke")

    def on_trial_start(self, payload):
        raise ValueError(f"trial {payload.number} start hook broke")

    def on_trial_end(self, payload, result):
        raise KeyError("end")

    def on_search_end(self, summary):
        raise RuntimeError("end hook broke\nsecond line")


def _spec(tmp_path, **overrides):
    base = {
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 4},
        "resources": {"max_concurrent": 1},
    }
    return load_spec(make_spec_dict(tmp_path, **{**base, **overrides}))


def test_hooks_are_called_in_order_after_each_commit(ray_session, tmp_path):
    spec = _spec(tmp_path)
    recorder = Recorder()
    options = {"fake_fail_plan": {"2": "exception"}}
    summary = run_search(
        spec, trial_fn=INSTANT, progress=False, trial_options=options, callbacks=[recorder]
    )
    assert summary.n_complete == 3 and summary.n_failed == 1
    recs = {r.number: r for r in RunDir(spec.output).trials()}
    expected: list[tuple] = [("search_start", 4, 0)]
    for n in range(4):
        rec = recs[n]
        expected.append(("trial_start", n))
        # on_trial_end sees trial.json written and the study told what it says
        expected.append(
            (
                "trial_end",
                n,
                rec.state,
                rec.value,
                (rec.state, rec.value),
                ("COMPLETE" if rec.state == "COMPLETE" else "FAIL", rec.value),
            )
        )
    expected.append(("search_end", 3, 1, None))
    assert recorder.calls == expected
    assert recs[2].state == "FAIL" and recs[2].value is None
    assert all(recs[n].value is not None for n in (0, 1, 3))


def test_a_failing_callback_is_a_warning_and_the_search_goes_on(ray_session, tmp_path):
    spec = _spec(tmp_path, budget={"n_trials": 3})
    recorder = Recorder()
    with pytest.warns(CallbackWarning) as caught:
        summary = run_search(
            spec, trial_fn=INSTANT, progress=False, callbacks=[Raising(), recorder]
        )
    assert summary.n_complete == 3
    messages = [str(w.message) for w in caught if w.category is CallbackWarning]
    assert messages == [
        "callback Raising.on_search_start raised RuntimeError: start hook broke; "
        "the search goes on",
        *[
            line
            for n in range(3)
            for line in (
                f"callback Raising.on_trial_start raised ValueError: trial {n} start hook broke; "
                "the search goes on",
                "callback Raising.on_trial_end raised KeyError: 'end'; the search goes on",
            )
        ],
        "callback Raising.on_search_end raised RuntimeError: end hook broke; the search goes on",
    ]
    # the callback after the failing one still got every call
    assert [c[0] for c in recorder.calls] == [
        "search_start",
        *["trial_start", "trial_end"] * 3,
        "search_end",
    ]
    study = optuna.load_study(study_name="bc-test", storage=RunDir(spec.output).storage_url())
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3


def test_search_end_is_called_when_failures_stop_the_search(ray_session, tmp_path):
    spec = _spec(
        tmp_path, budget={"n_trials": 10}, resources={"max_concurrent": 1, "max_failures": 2}
    )
    recorder = Recorder()
    with pytest.raises(StudyStopped, match="stopped after 2 consecutive failed trials"):
        run_search(
            spec,
            trial_fn=INSTANT,
            progress=False,
            trial_options={"fake_fail_all": True},
            callbacks=[recorder],
        )
    assert [c[0] for c in recorder.calls].count("trial_end") == 2
    name, n_complete, n_failed, stopped = recorder.calls[-1]
    assert (name, n_complete, n_failed) == ("search_end", 0, 2)
    assert stopped.startswith("stopped after 2 consecutive failed trials")


class StopAtSecondTrial(Recorder):
    def on_trial_start(self, payload) -> None:
        super().on_trial_start(payload)
        if payload.number == 1:
            raise KeyboardInterrupt


def test_ctrl_c_in_a_callback_interrupts_the_search(ray_session, tmp_path):
    """A KeyboardInterrupt is not swallowed as a callback error: the search is interrupted
    as by Ctrl-C, the trial in flight recorded and queued again, and on_search_end called."""
    spec = _spec(tmp_path)
    recorder = StopAtSecondTrial()
    with pytest.raises(Interrupted) as stopped:
        run_search(spec, trial_fn=INSTANT, progress=False, callbacks=[recorder])
    assert stopped.value.n_cancelled == 1 and stopped.value.summary.requeued == [1]
    assert [c[:2] for c in recorder.calls] == [
        ("search_start", 4),
        ("trial_start", 0),
        ("trial_end", 0),
        ("trial_start", 1),
        ("search_end", 1),
    ]
    study = optuna.load_study(study_name="bc-test", storage=RunDir(spec.output).storage_url())
    assert study.trials[1].user_attrs.get("interrupted") is True
    assert study.trials[2].state == optuna.trial.TrialState.WAITING


def test_hooks_skip_missing_methods_and_let_keyboard_interrupt_through():
    """No Ray: duck-typed callbacks may leave hooks out; Ctrl-C is never caught."""

    class OnlyEnd:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_trial_end(self, payload, result) -> None:
            self.seen.append(result)

    class Interrupting(Callback):
        def on_search_end(self, summary):
            raise KeyboardInterrupt

    only_end = OnlyEnd()
    hooks = Hooks([only_end, Interrupting()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for the missing hooks
        hooks("on_search_start", None)
        hooks("on_trial_end", None, 7)
    assert only_end.seen == [7]
    with pytest.raises(KeyboardInterrupt):
        hooks("on_search_end", None)


def test_the_progress_eta_is_at_most_the_time_budget_left(monkeypatch):
    """A budget given in time (a pipeline family's share) caps the ETA at the time left,
    instead of the count of a trial cap that the time ends first."""
    import io

    from hpsearch.search import driver

    clock = [1000.0]
    monkeypatch.setattr(driver.time, "time", lambda: clock[0])
    counted = driver._Progress(1000, stream=io.StringIO())
    timed = driver._Progress(1000, stream=io.StringIO(), timeout_s=120)
    clock[0] += 60  # one trial a minute: 999 more would take 16 hours
    assert counted.line(1, 0, 0, 1, (0, 0.5), 1).endswith("1:00 elapsed, ETA 16:39:00")
    assert timed.line(1, 0, 0, 1, (0, 0.5), 1).endswith("1:00 elapsed, ETA 1:00")
    assert timed.line(0, 0, 0, 1, None, 0).endswith("ETA 1:00")  # no trial finished yet
    clock[0] += 600
    assert timed.line(5, 0, 0, 1, (0, 0.5), 5).endswith("ETA 0:00")
