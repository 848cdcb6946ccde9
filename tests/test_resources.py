"""Resources a trial can never have are refused before any work; a trial that waits too
long for its resources stops the run; a search with no complete trial exits non-zero with
its most common failure; stored failure texts carry no terminal colour codes.

The Ray session of ``tests/conftest.py`` has one node with 4 logical CPUs and 2 GPUs.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
import ray

import hpsearch
from hpsearch.cli.app import main
from hpsearch.core.errors import StudyStopped, UserError
from hpsearch.core.spec import SpecError, load_spec
from hpsearch.core.store import RunDir
from hpsearch.search import runner
from hpsearch.search.driver import run_search
from hpsearch.search.trial import TrialPayload, TrialResult
from tests.conftest import make_spec_dict, write_spec

INSTANT = "hpsearch.search.testing:instant"
ANSI_ERROR = "\x1b[1mboom\x1b[0m in \x1b[31mcolour\x1b[39m"  # as Keras and Ray colour theirs


def colourful_failure(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """A trial function (imported by the workers) whose error message carries colour codes."""
    raise ValueError(ANSI_ERROR)


def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
    }


def _study(run_dir: Path) -> optuna.Study:
    rd = RunDir(run_dir)
    return optuna.load_study(study_name=rd.read_meta()["study_name"], storage=rd.storage_url())


# --------------------------------------------------------------------------- refused up front

REFUSED = {
    "cpus_per_trial 1000": (
        {"cpus_per_trial": 1000},
        "spec field 'resources.cpus_per_trial': 1000 CPU(s) per trial, but the largest node "
        "of the Ray cluster has 4, so no trial could ever start. Fix: set `cpus_per_trial` to "
        "at most 4, or join a cluster with bigger nodes (--address).",
    ),
    "gpus_per_trial 3": (
        {"gpus_per_trial": 3},
        "spec field 'resources.gpus_per_trial': 3 GPU(s) per trial, but the largest node of "
        "the Ray cluster has 2, so no trial could ever start. Fix: set `gpus_per_trial` to at "
        "most 2, or join a cluster with bigger nodes (--address).",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_resources_no_node_has_are_refused_with_nothing_written(
    ray_session, tmp_path, capsys, case
):
    resources, expected = REFUSED[case]
    spec_path = write_spec(tmp_path, resources=resources)
    before = _snapshot(tmp_path)
    rc = main(["run", str(spec_path), "--quiet", "--trial-fn", INSTANT])
    out, err = capsys.readouterr()
    assert (rc, out, err) == (2, "", f"error: {expected}\n")
    assert _snapshot(tmp_path) == before  # no run directory
    with pytest.raises(UserError, match="no trial could ever start"):  # the Python API too
        hpsearch.run(make_spec_dict(tmp_path, resources=resources), progress=False)
    assert _snapshot(tmp_path) == before


def test_a_custom_resource_no_node_has_is_refused(ray_session):
    with pytest.raises(UserError) as err:
        runner.check_resources(1, 0, {"tpu": 1})
    assert str(err.value) == (
        "trial resource 'tpu': 1 per trial, but no node of the Ray cluster has 'tpu', so no "
        "trial could ever start. Fix: leave 'tpu' out, or start nodes that have it "
        """(`ray start --resources '{"tpu": 1}'`)."""
    )
    runner.check_resources(4, 2)  # the whole node: can be had
    runner.check_resources(0.5, 0.5)


def test_no_gpu_at_all_names_cpu_only_trials_as_the_fix(ray_session, monkeypatch):
    monkeypatch.setattr(runner, "cluster_offers", lambda: ([{"CPU": 8.0}], [], False))
    with pytest.raises(UserError) as err:
        runner.check_resources(1, 1)
    assert str(err.value) == (
        "spec field 'resources.gpus_per_trial': 1 GPU(s) per trial, but no node of the Ray "
        "cluster has a GPU, so no trial could ever start. Fix: set `gpus_per_trial: 0`, or "
        "join a cluster with GPU nodes (--address)."
    )


def test_cpus_and_gpus_that_no_single_node_has_together_are_refused(monkeypatch):
    offers = [{"CPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}]
    monkeypatch.setattr(runner, "cluster_offers", lambda: (offers, [], False))
    runner.check_resources(8, 0)
    runner.check_resources(2, 1)
    with pytest.raises(UserError, match=r"^spec field 'resources': 4 CPU\(s\), 1 GPU\(s\) per "):
        runner.check_resources(4, 1)


def _cluster_config(gpus: int, max_count: int) -> Any:
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    group = config.node_group_configs.add()
    group.name, group.max_count, group.min_count = "gpu_worker", max_count, 0
    group.resources["CPU"], group.resources["GPU"] = 8, gpus
    return config


def test_node_types_an_autoscaler_can_add_count(ray_session, monkeypatch):
    from ray._private.state import state

    monkeypatch.setattr(state, "get_cluster_config", lambda: _cluster_config(4, max_count=3))
    runner.check_resources(8, 4)  # no such node yet, but the autoscaler can add one
    with pytest.raises(UserError) as err:
        runner.check_resources(1, 5)
    assert str(err.value).startswith(
        "spec field 'resources.gpus_per_trial': 5 GPU(s) per trial, but the largest node of "
        "the Ray cluster (or of the node types its autoscaler can add) has 4, "
    )
    # a node type the autoscaler may not start (max 0 nodes) offers nothing
    monkeypatch.setattr(state, "get_cluster_config", lambda: _cluster_config(4, max_count=0))
    with pytest.raises(UserError, match="the largest node of the Ray cluster has 2"):
        runner.check_resources(1, 4)


def test_an_autoscaler_of_unknown_node_types_gets_the_benefit_of_the_doubt(
    ray_session, monkeypatch
):
    from ray.experimental import internal_kv

    assert runner._autoscaler_running() is False  # the embedded Ray's monitor is read-only
    with pytest.raises(UserError):
        runner.check_resources(1000, 0)
    status = {"autoscaler_report": {"active_nodes": {"ray.head.default": 1}}}
    monkeypatch.setattr(internal_kv, "_internal_kv_get", lambda key: json.dumps(status))
    assert runner._autoscaler_running() is True  # a `ray up` cluster: it may add big nodes
    runner.check_resources(1000, 0)


def test_wait_timeout_s_is_validated(tmp_path):
    spec = load_spec(make_spec_dict(tmp_path, resources={"wait_timeout_s": None}))
    assert spec.resources.wait_timeout_s is None
    assert load_spec(make_spec_dict(tmp_path)).resources.wait_timeout_s == 600
    with pytest.raises(SpecError) as err:
        load_spec(make_spec_dict(tmp_path, resources={"wait_timeout_s": 0}))
    assert str(err.value) == (
        "spec field 'resources.wait_timeout_s': must be positive, got 0. Fix: give the seconds "
        "a trial may wait for its CPUs/GPUs, e.g. 600, or null to wait forever"
    )


# --------------------------------------------------------------------------- waiting too long


@ray.remote(num_cpus=1)
class _Holder:
    """Another job's worker holding one of the node's 4 CPUs."""

    def ready(self) -> bool:
        return True


def test_a_trial_waiting_longer_than_wait_timeout_s_stops_the_run(ray_session, tmp_path):
    """A trial asking for the node's 4 CPUs while another job holds one can never begin: the
    run stops after ``wait_timeout_s`` (not when the machine is slow: the trial cannot begin
    at all while the holder lives), and --resume runs it once the CPUs are free."""
    d = make_spec_dict(
        tmp_path,
        budget={"n_trials": 2},
        resources={"cpus_per_trial": 4, "max_concurrent": 1, "wait_timeout_s": 1},
    )
    holder = _Holder.remote()
    try:
        assert ray.get(holder.ready.remote(), timeout=300)
        with pytest.raises(StudyStopped) as err:
            run_search(load_spec(d), trial_fn=INSTANT, progress=False)
    finally:
        ray.kill(holder)
    message = str(err.value)
    assert message.startswith(
        "trial 0 waited more than 1 s (resources.wait_timeout_s) for a Ray worker with 4 "
        "CPU(s) and did not start; the cluster has "
    ), message
    assert message.endswith(
        " of 4 CPU(s) free. The search stopped; 1 trial(s) in flight cancelled and queued "
        "again. Fix: free the cluster's resources (`ray status` shows what holds them), or "
        "lower `resources.max_concurrent` or the resources per trial (each warm worker keeps "
        "its own), or raise `resources.wait_timeout_s` (null waits forever); then continue "
        "with --resume; finished trials are kept."
    ), message
    run_dir = Path(d["output"])
    assert RunDir(run_dir).trials() == []  # nothing ran
    study = _study(run_dir)
    assert study.trials[0].user_attrs.get("interrupted") is True
    assert [t.state for t in study.trials] == [
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.WAITING,  # its parameters, queued for --resume
    ]
    # the CPUs free again, --resume runs the budget (the timeout is not part of the run)
    d["resources"]["wait_timeout_s"] = None
    summary = run_search(load_spec(d), resume=True, trial_fn=INSTANT, progress=False)
    assert (summary.n_complete, summary.n_failed) == (2, 0)
    assert _study(run_dir).trials[1].user_attrs["requeued_from"] == 0


# --------------------------------------------------------------------------- no complete trial


@pytest.mark.parametrize("command", ["run", "pipeline"])
def test_a_search_with_no_complete_trial_exits_1_naming_the_most_common_failure(
    ray_session, tmp_path, capsys, command
):
    spec_path = write_spec(tmp_path, budget={"n_trials": 3}, resources={"max_failures": 5})
    plan = json.dumps({"0": "exception", "1": "nan", "2": "exception"})
    argv = [command, str(spec_path), "--quiet", "--trial-fn", INSTANT]
    assert main([*argv, "--trial-option", f"fake_fail_plan={plan}"]) == 1
    out, err = capsys.readouterr()
    run_dir = tmp_path / "run"
    assert (out, err) == (
        "",
        "error: the search ended with no complete trial: 3 failed, most often (2 of 3) with "
        "exception: RuntimeError: planned failure in trial 2. Fix: read the failed trials' "
        f"errors (`hpsearch trials {run_dir}`), correct their cause (spec, space, data or "
        "trial function), then continue with --resume.\n",
    )
    assert len(RunDir(run_dir).trials("FAIL")) == 3
    assert not (run_dir / "ensembles").exists()


def test_stored_failure_texts_carry_no_colour_codes_and_the_api_raises(ray_session, tmp_path):
    d = make_spec_dict(
        tmp_path,
        budget={"n_trials": 2},
        training={"trial_fn": "tests.test_resources:colourful_failure"},
    )
    with pytest.raises(StudyStopped) as err:
        hpsearch.run(d, progress=False)
    assert str(err.value).startswith(
        "the search ended with no complete trial: 2 failed, most often (2 of 2) with "
        "exception: ValueError: boom in colour. Fix: "
    )
    run_dir = Path(d["output"])
    for rec in RunDir(run_dir).trials():
        assert rec.info["error"] == "ValueError: boom in colour"
        assert rec.info["reason"] == "exception"
        assert "\x1b" not in json.dumps(rec.info)
    for trial in _study(run_dir).trials:
        assert trial.user_attrs["error"] == "ValueError: boom in colour"


def test_a_trial_function_that_does_not_import_fails_the_trial_not_the_worker():
    payload = TrialPayload(
        number=0, params={}, family="dense", metric="log_loss", task="binary", seed=0,
        training={}, inputs={}, outputs={},
    )  # fmt: skip
    result = runner._run_one("nosuchmodule:fn", payload, {}, None)
    assert (result.state, result.reason) == ("FAIL", "exception")
    assert result.error == (
        "PluginError: trainer 'nosuchmodule:fn': cannot import module 'nosuchmodule' (No "
        "module named 'nosuchmodule'). Fix: check the module path and that it is installed on "
        "every Ray node."
    )


def _raise_coloured() -> None:
    raise ValueError(ANSI_ERROR)


class _Alive:
    def ping(self) -> int:
        return 1

    def die(self) -> None:
        os._exit(1)


def test_ray_failures_are_stored_without_colour_codes(ray_session):
    """Ray colours the header of an error raised in a task; a dead worker is "worker died"."""
    payload = TrialPayload(
        number=4, params={}, family="dense", metric="log_loss", task="binary", seed=0,
        training={}, inputs={}, outputs={},
    )  # fmt: skip
    # by the name the workers import it under (pytest imports this file as test_resources)
    here = importlib.import_module("tests.test_resources")
    ref = ray.remote(num_cpus=0)(here._raise_coloured).remote()
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        ray.get(ref)
    result, died = runner._failure_in_ray(raised.value, runner._InFlight(payload, ref))
    assert (result.number, result.reason, result.error, died) == (
        4, "exception", "ValueError: boom in colour", False
    )  # fmt: skip
    assert "\x1b" not in result.traceback and "ValueError" in result.traceback
    actor = ray.remote(num_cpus=0)(here._Alive).remote()
    ray.get(actor.ping.remote())
    # the process exits inside the call: ray.kill is asynchronous, and a call sent right
    # after it could still be answered
    with pytest.raises(ray.exceptions.RayActorError) as dead:
        ray.get(actor.die.remote())
    result, died = runner._failure_in_ray(dead.value, runner._InFlight(payload, None))
    assert (result.reason, died) == ("worker died", True)
    assert result.error.startswith("ActorDiedError: ") and "\x1b" not in result.error
