"""Spec validation: every message names the field, the value and the fix; all errors at once."""

from __future__ import annotations

import copy

import pytest
import yaml

from hpsearch.core.spec import Spec, SpecError, load_spec
from tests.conftest import make_spec_dict

BASE = {
    "name": "bc",
    "data": {"train": "sklearn:breast_cancer", "target": "target", "task": "binary"},
    "split": {"valid": 0.2, "holdout": 0.2, "seed": 0},
    "metric": "log_loss",
    "space": "tabular_mlp",
}


def spec(**sections):
    d = copy.deepcopy(BASE)
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return d


def errors_of(d, **kw) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec(d, **kw)
    return exc.value.errors


def one_error(d) -> str:
    errs = errors_of(d)
    assert len(errs) == 1, errs
    return errs[0]


def test_defaults_and_round_trip(tmp_path):
    s = load_spec(BASE, base_dir=tmp_path)
    assert isinstance(s, Spec)
    assert s.output == str((tmp_path / "runs" / "bc").resolve())
    assert s.sampler.name == "tpe" and s.budget.n_trials == 20 and s.resources.max_concurrent == 2
    assert (
        s.training.batch_size == 64 and s.pruner is None and s.ensemble.trees == ("rf", "et", "hgb")
    )
    again = load_spec(s.to_dict())
    assert again == s
    assert again.fingerprint() == s.fingerprint()
    assert yaml.safe_load(yaml.safe_dump(s.to_dict())) == s.to_dict()


def test_fingerprint_covers_data_and_split_only():
    a = load_spec(BASE)
    assert load_spec(spec(budget={"n_trials": 3})).fingerprint() == a.fingerprint()
    assert load_spec(spec(split={"seed": 1})).fingerprint() != a.fingerprint()


def test_task_and_metric_inferred():
    s = load_spec({"name": "d", "data": {"train": "sklearn:diabetes"}, "space": "tabular_mlp"})
    assert (s.data.task, s.metric) == ("regression", "rmse")
    s = load_spec({"name": "w", "data": {"train": "sklearn:wine"}, "space": "tabular_mlp"})
    assert (s.data.task, s.metric) == ("multiclass", "log_loss")


def test_split_fraction_out_of_range():
    assert one_error(spec(split={"valid": 1.5})) == (
        "spec field 'split.valid': must be between 0 and 1 (exclusive), got 1.5. "
        "Fix: give the fraction of rows for the valid split, for example 0.2"
    )


def test_split_sum_too_large():
    msg = one_error(spec(split={"valid": 0.5, "holdout": 0.45}))
    assert msg.startswith(
        "spec field 'split': valid + holdout must be below 0.9, got 0.5 + 0.45 = 0.95."
    )
    assert "Fix: leave at least 10% of the rows for training" in msg


def test_unknown_key_suggests_closest():
    msg = one_error(spec(split={"vaild": 0.2}))
    assert msg == (
        "spec field 'split.vaild': unknown key 'vaild' in section 'split'. "
        "Fix: did you mean 'valid'? valid keys in section 'split': valid, holdout, seed"
    )
    msg = one_error(spec(budgt={"n_trials": 3}))
    assert (
        "spec field 'budgt': unknown key 'budgt' in the top level. Fix: did you mean 'budget'?"
        in msg
    )


def test_wrong_type_names_value_and_expected():
    assert one_error(spec(budget={"n_trials": "ten"})) == (
        "spec field 'budget.n_trials': expected an integer, got 'ten' (string). "
        "Fix: write an integer, for example `n_trials: 20`"
    )
    msg = one_error(spec(resources={"warm_workers": "yes"}))
    assert "spec field 'resources.warm_workers': expected true or false, got 'yes' (string)" in msg


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"budget": {"n_trials": 0}},
            "spec field 'budget.n_trials': must be at least 1, got 0. Fix: run at least one trial",
        ),
        (
            {"resources": {"cpus_per_trial": 0}},
            "spec field 'resources.cpus_per_trial': must be greater than 0, got 0. Fix: give the CPUs",
        ),
        (
            {"resources": {"gpus_per_trial": -1}},
            "spec field 'resources.gpus_per_trial': must be 0 or more, got -1. Fix: use 0 for CPU-only",
        ),
        (
            {"resources": {"max_concurrent": 0}},
            "spec field 'resources.max_concurrent': must be at least 1, got 0. Fix: run at least one trial at a time",
        ),
        (
            {"metric": "logloss"},
            "spec field 'metric': unknown metric 'logloss'. Fix: did you mean 'log_loss'? use one of: log_loss, roc_auc, accuracy, rmse, rmsle, mae, f1_macro",
        ),
        (
            {"metric": "rmse"},
            "spec field 'metric': 'rmse' does not apply to a binary task. Fix: use one of: log_loss, roc_auc, accuracy, f1_macro, or set `data.task`",
        ),
        (
            {"sampler": {"name": "tpee"}},
            "spec field 'sampler.name': unknown sampler 'tpee'. Fix: did you mean 'tpe'? use one of: tpe, hyperopt-tpe, random, cmaes, gp, or module:Name",
        ),
        (
            {"pruner": "medain"},
            "spec field 'pruner': unknown pruner 'medain'. Fix: did you mean 'median'? use one of: median, hyperband, or null",
        ),
        (
            {"data": {"task": "classification"}},
            "spec field 'data.task': unknown task 'classification'. Fix: use one of: binary, multiclass, regression, or null",
        ),
        (
            {"data": {"train": "sklearn:breast"}},
            "spec field 'data.train': unknown bundled dataset 'sklearn:breast'. Fix: did you mean 'sklearn:breast_cancer'?",
        ),
        (
            {"data": {"image_shape": [8, 0]}},
            "spec field 'data.image_shape': expected a list of positive integers, got [8, 0]. Fix: write it channels last",
        ),
        (
            {"data": {"columns": {"x": "words"}}},
            "spec field 'data.columns.x': unknown column kind 'words'. Fix: use one of: numeric, categorical, text, datetime, drop",
        ),
        (
            {"sampler": {"seed": -1}},
            "spec field 'sampler.seed': must be at least 0, got -1. Fix: use a seed from 0 to 4294967295 (numpy's range), or null for a random one",
        ),
        (
            {"split": {"seed": 2**32}},
            "spec field 'split.seed': must be at most 4294967295, got 4294967296. Fix: use a seed from 0 to 4294967295, for example `seed: 0`",
        ),
    ],
)
def test_each_validation_message(section, expected):
    msg = one_error(spec(**section))
    assert expected in msg


def test_gpu_fraction_ok():
    assert load_spec(spec(resources={"gpus_per_trial": 0.5})).resources.gpus_per_trial == 0.5


def test_missing_train_file_resolved_against_spec_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(data={"train": "train.csv"})))
    errs = errors_of(path)
    where = tmp_path / "sub" / "train.csv"
    assert errs == [
        f"spec field 'data.train': file 'train.csv' does not exist (looked for {where}). "
        "Fix: check the path; relative paths are resolved against the spec file's directory"
    ]
    (tmp_path / "sub" / "train.csv").write_text("a,target\n1,0\n2,1\n")
    s = load_spec(path)
    assert s.data.train == str(where) and s.output == str(tmp_path / "sub" / "runs" / "bc")


def test_all_errors_collected():
    d = spec(split={"valid": 2}, budget={"n_trials": 0}, sampler={"name": "grid"}, extra_key=1)
    with pytest.raises(SpecError) as exc:
        load_spec(d)
    errs = exc.value.errors
    assert len(errs) == 4
    text = str(exc.value)
    assert text.startswith("spec: 4 problems:\n")
    assert text.splitlines()[1:] == errs
    fields = {e.split("'")[1] for e in errs}
    assert fields == {"split.valid", "budget.n_trials", "sampler.name", "extra_key"}


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndata:\n  train: [a, b\nspace: y\n")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    msg = str(exc.value)
    assert f"spec file {str(path)!r} line" in msg and "malformed YAML" in msg and "Fix:" in msg
    line = int(msg.split(" line ")[1].split(",")[0])
    assert line in (3, 4)


def test_missing_required_fields():
    errs = errors_of({"data": {"target": "y"}})
    assert "spec field 'name': missing. Fix: add `name: my-search`" in errs[0]
    assert any(e.startswith("spec field 'data.train': missing.") for e in errs)
    assert any(e.startswith("spec field 'space': missing.") for e in errs)


def test_overrides_dotted_and_strings():
    s = load_spec(BASE, overrides={"budget.n_trials": "5", "sampler.name": "random"})
    assert s.budget.n_trials == 5 and s.sampler.name == "random"
    s = load_spec(BASE, overrides=["split.seed=3"])
    assert s.split.seed == 3


def test_spec_error_is_value_error():
    assert issubclass(SpecError, ValueError)
    with pytest.raises(ValueError):
        load_spec(spec(split={"valid": 0}))


def test_example_yaml_from_the_brief(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(EXAMPLE)
    s = load_spec(path)
    assert s.ensemble.method == "nelder-mead" and s.resources.warm_workers is True
    assert load_spec(s.to_dict()) == s


EXAMPLE = """
name: breast-cancer-mlp
data:
  train: sklearn:breast_cancer
  test: null
  sample_submission: null
  target: target
  id: null
  task: binary
  image_shape: null
  columns: {}
split: {valid: 0.2, holdout: 0.2, seed: 0}
metric: log_loss
space: tabular_mlp
sampler: {name: tpe, seed: 0}
budget: {n_trials: 20, timeout_s: null}
resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent: 2, max_failures: 5, warm_workers: true}
training: {max_epochs: 30, batch_size: 64, patience: 5}
pruner: null
output: runs/breast-cancer-mlp
storage: null
ensemble: {top_k: 5, max_corr: 0.95, trees: [rf, et, hgb], method: nelder-mead, folds: 5}
"""


def test_a_relative_sqlite_storage_is_relative_to_the_spec_file(tmp_path):
    """Resuming from another working directory must open the same database."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(storage="sqlite:///db/study.db")))
    assert load_spec(path).storage == f"sqlite:///{tmp_path / 'db' / 'study.db'}"
    path.write_text(yaml.safe_dump(spec(storage="sqlite:////abs/study.db")))
    assert load_spec(path).storage == "sqlite:////abs/study.db"
    path.write_text(yaml.safe_dump(spec(storage="postgresql://u@h/db")))
    assert load_spec(path).storage == "postgresql://u@h/db"


def test_tree_models_of_optional_packages_are_accepted_when_installed(monkeypatch):
    import importlib.util

    d = spec(ensemble={"trees": ["rf", "lgbm"]})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert one_error(d) == (
        "spec field 'ensemble.trees': tree model 'lgbm' needs the lightgbm package, which is "
        "not installed. Fix: `pip install lightgbm`, or leave lgbm out of the list"
    )
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    loaded = load_spec(d)
    assert loaded.ensemble.trees == ("rf", "lgbm") and loaded.name == d["name"]


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ({"sampler": {"name": "cmaes"}}, ("sampler", "name", "cmaes")),
        ({"sampler": {"name": "gp"}}, ("sampler", "name", "gp")),
        (
            {"sampler": {"name": "my_pkg.samplers:Mine"}},
            ("sampler", "name", "my_pkg.samplers:Mine"),
        ),
        ({"training": {"trial_fn": "keras"}}, ("training", "trial_fn", "keras")),
        ({"ensemble": {"method": "my_pkg.blend:Top"}}, ("ensemble", "method", "my_pkg.blend:Top")),
    ],
)
def test_plugin_names_and_module_paths_are_accepted(tmp_path, section, value):
    spec = load_spec(make_spec_dict(tmp_path, **section))
    part, field, expected = value
    assert getattr(getattr(spec, part), field) == expected


def test_unknown_trainer_name_is_refused(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(make_spec_dict(tmp_path, training={"trial_fn": "kerass"}))
    assert (
        str(e.value)
        .splitlines()[-1]
        .strip()
        .startswith(
            "spec field 'training.trial_fn': 'kerass' is neither a registered trainer (keras) nor "
            "of the form module:function."
        )
    )
