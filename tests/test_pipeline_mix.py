"""`hpsearch pipeline` with several families (`spaces`): the budget split, the sibling runs,
one ensemble of them all, the progress lines, pipeline.json and resume across families."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import yaml

from hpsearch.core.errors import RunDirError, StudyStopped, UserError
from hpsearch.core.spec import SpecError, load_spec, spec_json_schema
from hpsearch.pipeline import run as pipeline
from hpsearch.pipeline.competition import write_competition
from hpsearch.pipeline.run import plan_families, run_pipeline, split_trials
from hpsearch.search.driver import run_search as REAL_RUN_SEARCH
from search_spaces import LIBRARY_DIR
from tests.conftest import make_spec_dict

ORACLE = "hpsearch.search.testing:oracle"
TWO = {"tabular_mlp": 3, "wide_deep": 2}  # cheap spaces standing in for the families


def mix_dict(tmp_path, spaces=TWO, **over):
    d = make_spec_dict(tmp_path, **over)
    d.pop("space")
    if spaces is not None:
        d["spaces"] = spaces
    return d


def errors_of(d):
    with pytest.raises(SpecError) as exc:
        load_spec(d)
    return exc.value.errors


# --------------------------------------------------------------------------- the spec


def test_spaces_are_normalized_and_round_trip(tmp_path):
    spec = load_spec(mix_dict(tmp_path, {"tabular_mlp": 3, "wide_deep": 1}))
    assert spec.space is None and spec.spaces == {"tabular_mlp": 0.75, "wide_deep": 0.25}
    d = spec.to_dict()
    assert "space" not in d and d["spaces"] == spec.spaces
    assert load_spec(d) == spec
    one = load_spec(make_spec_dict(tmp_path))  # one space: no `spaces` key in its files
    assert "spaces" not in one.to_dict() and one.spaces is None
    # a space file is resolved against the spec's directory
    shutil.copy(f"{LIBRARY_DIR}/tabular_mlp.yaml", tmp_path / "mine.yaml")
    spec = load_spec(mix_dict(tmp_path, {"mine.yaml": 1, "wide_deep": 1}), base_dir=tmp_path)
    assert list(spec.spaces) == [str(tmp_path / "mine.yaml"), "wide_deep"]


def test_spaces_errors_name_the_entry_value_and_fix(tmp_path):
    errs = errors_of(mix_dict(tmp_path, {"tabular_mlpp": 1, "wide_deep": -1, "x.yaml": 1}))
    assert len(errs) == 3
    assert errs[0].startswith("spec field 'spaces.tabular_mlpp': unknown space 'tabular_mlpp'")
    assert "did you mean 'tabular_mlp'?" in errs[0] and "hpsearch space list" in errs[0]
    assert errs[1].startswith("spec field 'spaces.wide_deep': the share must be a number above 0")
    assert "got -1" in errs[1] and "Fix: write e.g. `wide_deep: 0.5`" in errs[1]
    assert errs[2].startswith("spec field 'spaces.x.yaml': space file 'x.yaml' does not exist")
    for bad in (0, True, "half", None):
        (err,) = errors_of(mix_dict(tmp_path, {"tabular_mlp": bad}))
        assert "spec field 'spaces.tabular_mlp': the share must be a number above 0" in err
    (err,) = errors_of(mix_dict(tmp_path, {}))
    assert err.startswith("spec field 'spaces': empty. Fix: name at least one space")
    (err,) = errors_of(mix_dict(tmp_path, ["tabular_mlp"]))
    assert err.startswith("spec field 'spaces': expected a mapping space -> share")
    # two entries whose sibling runs would share a directory
    shutil.copy(f"{LIBRARY_DIR}/wide_deep.yaml", tmp_path / "tabular_mlp.yaml")
    (err,) = errors_of(
        mix_dict(tmp_path, {"tabular_mlp": 1, str(tmp_path / "tabular_mlp.yaml"): 1})
    )
    assert "its run directory 'tabular_mlp' is also that of 'tabular_mlp'" in err


def test_space_and_spaces_together_is_one_line(tmp_path):
    d = make_spec_dict(tmp_path, spaces={"wide_deep": 1})
    with pytest.raises(SpecError) as exc:
        load_spec(d)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(
        "spec field 'spaces': set together with `space: tabular_mlp`. Fix: keep one"
    )


def test_schema_has_spaces_and_space_is_optional():
    schema = spec_json_schema()
    assert schema["required"] == ["name", "data"]
    spaces = schema["properties"]["spaces"]["anyOf"][0]
    assert spaces["type"] == "object" and spaces["minProperties"] == 1
    assert spaces["additionalProperties"] == {"exclusiveMinimum": 0, "type": "number"}


def test_run_refuses_several_spaces_or_none_pointing_to_the_pipeline(tmp_path, capsys):
    from hpsearch.cli.app import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(mix_dict(tmp_path)))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: spec field 'spaces': `hpsearch run` searches one space, ")
    assert "(tabular_mlp, wide_deep)" in err and "hpsearch pipeline SPEC" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["submit", str(path)]) == 2  # a job runs `hpsearch run`: refused up front
    assert "`hpsearch submit` searches one space" in capsys.readouterr().err
    path.write_text(yaml.safe_dump(mix_dict(tmp_path, spaces=None)))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: spec field 'space': missing. Fix: add `space: tabular_mlp`")
    assert "only `hpsearch pipeline` has a default" in err
    assert not (tmp_path / "run").exists()
    import hpsearch

    with pytest.raises(SpecError, match="searches one space"):
        hpsearch.run(mix_dict(tmp_path), progress=False)


# --------------------------------------------------------------------------- the budget split


def test_trials_split_by_share_at_least_one_each():
    assert split_trials(10, [0.35, 0.2, 0.45]) == [4, 2, 4]
    assert split_trials(20, [0.35, 0.2, 0.45]) == [7, 4, 9]
    assert split_trials(2, [0.9, 0.05, 0.05]) == [2, 1, 1]


def test_each_family_gets_its_share_of_the_time_and_trials(tmp_path):
    spec = load_spec(mix_dict(tmp_path, budget={"n_trials": 10, "timeout_s": 100}))
    fams = plan_families(spec, dict(spec.spaces))
    assert [f.name for f in fams] == ["tabular_mlp", "wide_deep"]
    assert [f.timeout_s for f in fams] == pytest.approx([60, 40])
    assert [f.n_trials for f in fams] == [6, 4]
    for f in fams:  # each a complete spec of one space, in OUTPUT/<space>, the same split
        assert f.spec.space == f.name and f.spec.spaces is None
        assert f.spec.output == str(tmp_path / "run" / f.name)
        assert f.spec.name == f"bc-test-{f.name}"
        assert f.spec.split == spec.split and f.spec.data == spec.data
        assert (f.spec.budget.n_trials, f.spec.budget.timeout_s) == (f.n_trials, f.timeout_s)
        assert f.spec.ensemble == spec.ensemble
    # --n-trials splits the same way
    assert [f.n_trials for f in plan_families(spec, dict(spec.spaces), n_trials=5)] == [3, 2]
    # a budget in time only: no trial split, the time ends each family's search
    timed = load_spec({**mix_dict(tmp_path), "budget": {"timeout_s": 50}})
    fams = plan_families(timed, dict(timed.spaces))
    assert [f.timeout_s for f in fams] == pytest.approx([30, 20])
    assert [f.n_trials for f in fams] == [pipeline.TIME_BUDGET_TRIALS] * 2


def test_defaults_mix_budget_and_no_fixed_trees_beside_tree_families(tmp_path, monkeypatch):
    d = mix_dict(tmp_path, spaces=None)
    d.pop("budget")
    d.pop("ensemble", None)
    spec = load_spec(d)
    assert pipeline.pipeline_mix(spec) == pytest.approx(pipeline.DEFAULT_MIX)
    assert sum(pipeline.DEFAULT_MIX.values()) == pytest.approx(1.0)
    monkeypatch.setattr(pipeline, "DEFAULT_MIX", {"tabular_mlp": 1, "wide_deep": 3})
    mix = pipeline.pipeline_mix(spec)
    assert mix == {"tabular_mlp": 0.25, "wide_deep": 0.75}
    fams = plan_families(spec, mix)
    total = pipeline.DEFAULT_TIMEOUT_S
    assert [f.timeout_s for f in fams] == pytest.approx([0.25 * total, 0.75 * total])
    assert all(f.spec.ensemble.trees == spec.ensemble.trees != () for f in fams)
    # one space: no mix; the default time budget when the spec sets none
    one = load_spec({**d, "space": "tabular_mlp"})
    assert pipeline.pipeline_mix(one) is None
    timed = pipeline.default_budget(one)
    assert timed.budget.timeout_s == total and timed.budget.n_trials == pipeline.TIME_BUDGET_TRIALS
    assert pipeline.default_budget(one, n_trials=3) is one  # --n-trials: that many trials
    set_ = load_spec(make_spec_dict(tmp_path))  # budget: {n_trials: 4}
    assert pipeline.default_budget(set_) is set_
    # a tree family in the mix: the ensemble fits no fixed trees unless the spec names them
    trees = load_spec({**d, "spaces": {"lightgbm": 1, "wide_deep": 1}}, base_dir=tmp_path)
    assert pipeline._tree_space("lightgbm") and not pipeline._tree_space("tabular_mlp")
    assert all(f.spec.ensemble.trees == () for f in plan_families(trees, dict(trees.spaces)))
    # a network-only mix keeps the spec's fixed trees
    nets = load_spec({**d, "spaces": {"tabular_mlp": 1, "wide_deep": 1}}, base_dir=tmp_path)
    assert all(
        f.spec.ensemble.trees == nets.ensemble.trees for f in plan_families(nets, dict(nets.spaces))
    )
    named = load_spec(
        {**d, "spaces": {"lightgbm": 1}, "ensemble": {"trees": ["rf"]}}, base_dir=tmp_path
    )
    assert plan_families(named, dict(named.spaces))[0].spec.ensemble.trees == ("rf",)


# --------------------------------------------------------------------------- a whole pipeline


def competition_spec(tmp_path, **over):
    comp = write_competition(tmp_path / "comp", "binary")
    spec = yaml.safe_load((comp / "spec.yaml").read_text())
    spec.pop("space")
    spec["spaces"] = {"tabular_multi_input": 1, "tabular_mlp": 1}
    spec["output"] = str(tmp_path / "run")
    spec["split"] = {"folds": 3, "seed": 0}
    spec["budget"] = {"n_trials": 4}
    spec["ensemble"] = {"top_k": 4, "trees": [], "folds": 3, "margin": None}
    spec.update(over)
    path = comp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # the families in this order
    return comp, path


def test_mix_pipeline_layout_ensemble_of_every_family_and_progress(ray_session, tmp_path, capsys):
    from hpsearch.cli.app import main
    from hpsearch.core.runs import load_run

    comp, path = competition_spec(tmp_path)
    stream = io.StringIO()
    result = run_pipeline(load_spec(path), trial_fn=ORACLE, stream=stream)
    out = tmp_path / "run"
    names = ["tabular_multi_input", "tabular_mlp"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*names, "ensembles", "pipeline.json", "submission.csv"]
    )
    assert result.run_dir == out and result.runs == [out / n for n in names]
    # each sibling is a complete run: its status, its trials, the same folds
    folds = set()
    for name in names:
        run = load_run(out / name)
        assert run.status()["trials"] == {"COMPLETE": 2} and run.folds == 3
        assert main(["status", str(out / name)]) == 0
        split = json.loads((out / name / "data" / "split.json").read_text())
        folds.add(split["folds_fingerprint"])
    assert len(folds) == 1
    # pipeline.json: the spaces, the shares and each family's state, time and best
    state = json.loads((out / "pipeline.json").read_text())
    assert state["spaces"] == {"tabular_multi_input": 0.5, "tabular_mlp": 0.5}
    for name in names:
        rec = state["families"][name]
        assert rec["state"] == "done" and rec["n_trials"] == 2 and rec["n_complete"] == 2
        assert rec["elapsed_s"] > 0 and rec["wall_s"] >= rec["elapsed_s"]
        assert rec["best"]["value"] == pytest.approx(result.search[name].best_value)
    assert state["ensemble"] == str(result.ensemble_dir.relative_to(out))
    assert result.ensemble_dir.parent == out / "ensembles"
    # the ensemble took the candidates of every family run
    info = result.ensemble.info
    assert info["runs"] == [str(out / n) for n in names]
    labels = [m["label"] for m in info["members"]] + [m["label"] for m in info["dropped"]]
    for name in names:
        assert sum(label.startswith(f"example-binary-{name}/") for label in labels) == 2
    assert state["submission"] == "submission.csv"
    assert (out / "submission.csv").read_bytes() == (
        result.ensemble_dir / "submission.csv"
    ).read_bytes()
    # the pipeline's output is no run: `hpsearch status` names the sibling runs
    assert main(["status", str(out)]) == 2
    assert "but a pipeline of several runs (tabular_mlp, tabular_multi_input)" in (
        capsys.readouterr().err
    )
    # `ensembles build` takes a sibling run on its own too
    import ensembles

    again = ensembles.build([out / "tabular_mlp"], name="alone")
    assert {m["run"] for m in again.info["members"]} == {str(out / "tabular_mlp")}
    # the progress: a line as each family starts and ends, the finished ones' best
    text = stream.getvalue()
    assert "pipeline: 3-fold cross-validation; 2 families: " in text
    assert f"family tabular_multi_input (1/2): share 0.50, no time limit, up to 2 trials -> {out / names[0]}" in text  # fmt: skip
    best0 = state["families"][names[0]]["best"]["value"]
    assert f"family tabular_multi_input done: best log_loss {best0:.5g}" in text
    assert "2 complete, 0 failed, 0 pruned; " in text
    assert f"[tabular_mlp 2/2; best tabular_multi_input {best0:.4g}] [1/2] done 1" in text
    summary = result.summary_text()
    assert summary.splitlines()[0].split() == ["family", "share", "state", "time", "s", "trials", "best"]  # fmt: skip
    row = summary.splitlines()[1].split()
    assert row[:3] == ["tabular_multi_input", "0.50", "done"] and row[4] == "2"
    assert float(row[3]) == pytest.approx(state["families"][names[0]]["elapsed_s"], abs=0.5)
    # a second pipeline on the same output is refused; --resume with other spaces too
    with pytest.raises(RunDirError, match="already holds the pipeline 'example-binary'"):
        run_pipeline(load_spec(path), trial_fn=ORACLE, progress=False)


def _interrupt_family(monkeypatch, family: str, after: int, seen: list):
    """run_search, recording each call, with Ctrl-C after ``after`` trials of ``family``."""
    from hpsearch.search import driver
    from hpsearch.search.callbacks import Callback

    real = REAL_RUN_SEARCH  # not a wrapper set by an earlier call

    class CtrlC(Callback):
        n = 0

        def on_trial_end(self, payload, result):
            self.n += 1
            if self.n >= after:
                raise KeyboardInterrupt

    def recording(spec, **kwargs):
        seen.append((spec.output, spec.budget.timeout_s, kwargs["n_trials"], kwargs["resume"]))
        if family and spec.output.endswith(family):
            kwargs["callbacks"] = [*kwargs["callbacks"], CtrlC()]
        return real(spec, **kwargs)

    monkeypatch.setattr(driver, "run_search", recording)


def test_resume_skips_a_spent_family_and_continues_the_interrupted(
    ray_session, tmp_path, monkeypatch, capsys
):
    from hpsearch.cli.app import main
    from hpsearch.search.driver import Interrupted

    d = mix_dict(
        tmp_path,
        budget={"n_trials": 6, "timeout_s": 600},
        resources={"max_concurrent": 1},
        ensemble={"top_k": 3, "trees": [], "folds": 3},
    )
    spec = load_spec(d)
    out = tmp_path / "run"
    seen: list = []
    _interrupt_family(monkeypatch, "wide_deep", after=1, seen=seen)
    with pytest.raises(Interrupted):
        run_pipeline(spec, trial_fn=ORACLE, progress=False)
    state = json.loads((out / "pipeline.json").read_text())
    first, second = state["families"]["tabular_mlp"], state["families"]["wide_deep"]
    assert first["state"] == "done" and first["n_complete"] == 4
    assert second["state"] == "interrupted" and second["n_complete"] == 1
    assert [s[1:] for s in seen] == [(360.0, 4, False), (240.0, 2, False)]
    trial_files = sorted((out / "tabular_mlp" / "trials").glob("*/trial.json"))
    stamps = [p.stat().st_mtime_ns for p in trial_files]
    # --resume: the spent family is not run again, the interrupted one gets its time left
    seen.clear()
    _interrupt_family(monkeypatch, "", after=0, seen=seen)
    stream = io.StringIO()
    result = run_pipeline(spec, resume=True, trial_fn=ORACLE, stream=stream)
    assert [s[0] for s in seen] == [str(out / "wide_deep")]
    ((_, timeout, n, resume),) = seen
    assert timeout == pytest.approx(240.0 - second["elapsed_s"]) and n == 2 and resume
    assert [p.stat().st_mtime_ns for p in trial_files] == stamps
    assert "family tabular_mlp (1/2): its share is spent" in stream.getvalue()
    assert f"{timeout:.0f} s left of 240 s" in stream.getvalue()
    state = json.loads((out / "pipeline.json").read_text())
    assert state["families"]["wide_deep"]["state"] == "done"
    assert state["families"]["wide_deep"]["n_complete"] == 2
    assert state["families"]["wide_deep"]["elapsed_s"] > second["elapsed_s"]
    assert result.search["tabular_mlp"] is None and result.search["wide_deep"].n_complete == 2
    assert result.ensemble.info["runs"] == [str(out / "tabular_mlp"), str(out / "wide_deep")]
    # a resume whose spaces differ from pipeline.json's is refused in one line
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**d, "spaces": {"tabular_mlp": 1, "wide_deep": 1}}))
    capsys.readouterr()
    assert main(["pipeline", str(path), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot resume {out}: the spec's spaces {{tabular_mlp: 0.5, ")
    assert "{tabular_mlp: 0.6, wide_deep: 0.4}" in err and len(err.strip().splitlines()) == 1


def test_a_family_spent_in_time_is_skipped(tmp_path):
    spec = load_spec(mix_dict(tmp_path, budget={"n_trials": 10, "timeout_s": 100}))
    fam = plan_families(spec, dict(spec.spaces))[0]  # 60 s, 6 trials
    rec = {"state": "interrupted", "elapsed_s": 59.5, "n_complete": 2, "n_failed": 0, "n_pruned": 0}
    assert pipeline._left(fam, rec) == (pytest.approx(0.5), True)
    assert pipeline._left(fam, {**rec, "elapsed_s": 20}) == (pytest.approx(40), False)
    assert pipeline._left(fam, {**rec, "n_complete": 6})[1]
    assert not pipeline._left(fam, {**rec, "state": "pending", "elapsed_s": 0})[1]


def test_a_family_that_stops_early_leaves_the_others_to_the_ensemble(
    ray_session, tmp_path, monkeypatch, capsys
):
    from hpsearch.cli.app import main
    from hpsearch.search import driver

    real = driver.run_search

    def first_fails(spec, **kwargs):
        if spec.output.endswith("tabular_mlp"):
            raise StudyStopped("the search ended with no complete trial: planned")
        return real(spec, **kwargs)

    monkeypatch.setattr(driver, "run_search", first_fails)
    d = mix_dict(tmp_path, budget={"n_trials": 4}, ensemble={"top_k": 2, "trees": [], "folds": 3})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(d))
    code = main(["pipeline", str(path), "--quiet", "--trial-fn", ORACLE, "--folds", "0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "note: family tabular_mlp: the search ended with no complete trial: planned" in err
    assert f"hpsearch pipeline {path} --resume" in err
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert state["families"]["tabular_mlp"]["state"] == "stopped"
    assert state["families"]["wide_deep"]["state"] == "done"
    (ens,) = (tmp_path / "run" / "ensembles").iterdir()
    info = json.loads((ens / "ensemble.json").read_text())
    assert info["runs"] == [str(tmp_path / "run" / "wide_deep")]
    # every family stopped: no ensemble
    monkeypatch.setattr(
        driver, "run_search", lambda spec, **kw: (_ for _ in ()).throw(StudyStopped("planned"))
    )
    with pytest.raises(StudyStopped, match="no family of the pipeline has a complete trial"):
        run_pipeline(load_spec({**d, "output": str(tmp_path / "other")}), progress=False)


def test_output_checks_before_anything_runs(tmp_path, monkeypatch):
    spec = load_spec(mix_dict(tmp_path))
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="exists and holds no pipeline"):
        run_pipeline(spec, progress=False)
    (out / "notes.txt").unlink()
    (out / "run.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"holds a run of one space \(run.json\)"):
        run_pipeline(spec, progress=False)
    (out / "run.json").unlink()
    (out / "pipeline.json").write_text("{}")
    one = load_spec(make_spec_dict(tmp_path))
    with pytest.raises(RunDirError, match="holds a pipeline of several spaces"):
        run_pipeline(one, progress=False)
    with pytest.raises(RunDirError, match="is not a pipeline record"):
        run_pipeline(spec, resume=True, progress=False)
    monkeypatch.setattr(pipeline, "DEFAULT_MIX", {"tabular_mlp": 1, "nothing": 1})
    with pytest.raises(UserError, match="unknown space 'nothing'"):
        run_pipeline(load_spec(mix_dict(tmp_path, spaces=None)), progress=False)
