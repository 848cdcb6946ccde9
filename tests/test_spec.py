"""Spec validation: every message names the field, the value and the fix; all errors at once."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from hpsearch.core.spec import Spec, SpecError, load_spec
from tests.conftest import ROOT, make_spec_dict

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
        "Fix: did you mean 'valid'? valid keys in section 'split': valid, holdout, seed, "
        "min_rows, min_class_rows, folds, inner_valid"
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
            "spec field 'sampler.name': unknown sampler 'tpee'. Fix: did you mean 'tpe'? use one of: tpe, hyperopt-tpe, random, cmaes, gp, or one of your own as `name: mypackage.samplers:MySampler`",
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
    # no `space`: valid for `hpsearch pipeline` (its default mix); `hpsearch run` refuses it
    assert not any("'space'" in e for e in errs)


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


# --------------------------------------------------------------------------- specs built in Python


def test_a_spec_built_in_python_is_validated_and_settled():
    from hpsearch.core.spec import DataSpec, SplitSpec

    s = Spec(name="bc", data=DataSpec(train="sklearn:breast_cancer"), space="tabular_mlp")
    assert (s.task, s.metric) == ("binary", "log_loss")  # inferred, as load_spec does
    assert s == load_spec({"name": "bc", "data": {"train": "sklearn:breast_cancer"}, "space": "tabular_mlp"})  # fmt: skip
    with pytest.raises(SpecError) as exc:
        Spec(name="a b", data={"train": "sklearn:iris"}, space="tabular_mlp", split={"valid": 2})
    assert exc.value.errors == [
        "spec field 'name': 'a b' contains characters other than letters, digits, '.', '_', '-'. "
        "Fix: use a name such as 'a-b'",
        "spec field 'split.valid': must be between 0 and 1 (exclusive), got 2. "
        "Fix: give the fraction of rows for the valid split, for example 0.2",
    ]
    with pytest.raises(SpecError) as exc:  # a section alone names its fields in full
        SplitSpec(valid=0.5, holdout=0.45)
    assert str(exc.value).startswith("spec field 'split': valid + holdout must be below 0.9")
    with pytest.raises(SpecError) as exc:
        DataSpec(train="sklearn:iris", trian=1)
    assert exc.value.errors == [
        "spec field 'data.trian': unknown key 'trian' in section 'data'. Fix: did you mean "
        "'train'? valid keys in section 'data': train, test, sample_submission, target, id, "
        "task, image_shape, columns"
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"split": {"valid": 1.5}},
        {"budget": {"n_trials": "ten"}},
        {"sampler": {"name": "tpee"}},
        {"metric": "rmse"},
        {"data": {"columns": {"x": "words"}}},
        {"budgt": {"n_trials": 3}},
        {"ensemble": {"trees": ["rf", "xgbb"], "max_corr": 0}},
    ],
)
def test_model_validate_gives_the_messages_of_load_spec(bad):
    d = spec(**bad)
    with pytest.raises(SpecError) as exc:
        Spec.model_validate(d)
    assert exc.value.errors == errors_of(d)


def test_the_spec_is_frozen():
    s = load_spec(BASE)
    with pytest.raises(ValueError):
        s.split.valid = 0.3  # type: ignore[misc]


def test_a_dict_resolves_relative_paths_against_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "train.csv").write_text("a,target\n1,0\n2,1\n3,0\n")
    monkeypatch.chdir(tmp_path)
    s = load_spec(spec(data={"train": "train.csv"}, storage="sqlite:///db/s.db", space="my.yaml"))
    assert s.data.train == str(tmp_path / "train.csv")
    assert s.storage == f"sqlite:///{tmp_path / 'db' / 's.db'}"
    assert s.space == str(tmp_path / "my.yaml") and s.output == str(tmp_path / "runs" / "bc")
    assert s.source is None and load_spec(s.to_dict()) == s


def test_split_as_a_plain_dict_for_run_json():
    assert load_spec(spec(split={"seed": 3})).split.model_dump() == {
        "valid": 0.2,
        "holdout": 0.2,
        "seed": 3,
    }


def test_numbers_keep_their_type_and_integral_floats_read_as_integers():
    s = load_spec(spec(resources={"cpus_per_trial": 2, "gpus_per_trial": 0.5}, budget={"n_trials": 5.0}))  # fmt: skip
    assert type(s.resources.cpus_per_trial) is int and s.resources.gpus_per_trial == 0.5
    assert type(s.budget.n_trials) is int and s.budget.n_trials == 5
    assert one_error(spec(split={"valid": float("nan")})).startswith(
        "spec field 'split.valid': expected a number, got nan (number)."
    )
    assert one_error(spec(resources={"cpus_per_trial": True})).startswith(
        "spec field 'resources.cpus_per_trial': expected a number, got True (boolean)."
    )


def test_a_target_read_error_is_raised_as_the_data_error_it_is(tmp_path):
    from hpsearch.core.data import DataError

    (tmp_path / "train.csv").write_text("a,b\n1,0\n2,1\n")
    d = spec(data={"train": str(tmp_path / "train.csv"), "task": None})
    with pytest.raises(DataError) as exc:
        load_spec(d)
    assert not isinstance(exc.value, SpecError)
    assert str(exc.value).startswith("spec field 'data.target': column 'target' is not in")


# --------------------------------------------------------------------------- registries


def test_plugin_names_come_from_the_registries():
    from hpsearch.core.registry import BLENDERS, SAMPLERS

    for name in ("cmaes", "gp", "random", "mypackage.samplers:MySampler"):
        assert load_spec(spec(sampler={"name": name})).sampler.name == name
    for fn in ("keras", "trees", "auto", "hpsearch.search.testing:instant", "tests.trial_fns:hold"):
        assert load_spec(spec(training={"trial_fn": fn})).training.trial_fn == fn
    # null (written by older versions) and a missing field are "auto": the family's trainer
    assert load_spec(spec(training={"trial_fn": None})).training.trial_fn == "auto"
    assert load_spec(spec()).training.trial_fn == "auto"
    assert one_error(spec(training={"trial_fn": "kears"})) == (
        "spec field 'training.trial_fn': unknown trainer 'kears'. Fix: did you mean 'keras'? "
        "use one of: auto, keras, trees, or one of your own as `trial_fn: "
        "mypackage.trials:train`, or leave it out"
    )
    assert one_error(spec(ensemble={"method": "nelder"})) == (
        "spec field 'ensemble.method': unknown blend method 'nelder'. Fix: did you mean "
        "'nelder-mead'? use one of: auto, best, mean, greedy, nelder-mead, stack, or one of "
        "your own as `method: mypackage.blend:MyBlender`"
    )
    SAMPLERS.register("mine-test", "tests.nowhere:Sampler")
    BLENDERS.register("mine-test", "tests.nowhere:Blender")
    try:
        s = load_spec(spec(sampler={"name": "mine-test"}, ensemble={"method": "mine-test"}))
        assert (s.sampler.name, s.ensemble.method) == ("mine-test", "mine-test")
    finally:
        SAMPLERS.unregister("mine-test")
        BLENDERS.unregister("mine-test")
    assert len(errors_of(spec(sampler={"name": "mine-test"}))) == 1


def test_tree_models_are_checked_by_name():
    assert load_spec(spec(ensemble={"trees": None})).ensemble.trees == ()
    # a tree family's name is its tree model's
    trees = load_spec(spec(ensemble={"trees": ["lightgbm", "xgboost", "catboost"]})).ensemble.trees
    assert trees == ("lgbm", "xgb", "catboost")
    errs = errors_of(spec(ensemble={"trees": ["rf", "xgbost", 7]}))
    assert errs == [
        "spec field 'ensemble.trees': unknown tree model 'xgbost'. Fix: did you mean 'xgb'? "
        "use one of: rf, et, hgb, lgbm, xgb, catboost",
        "spec field 'ensemble.trees': unknown tree model 7. Fix: use one of: rf, et, hgb, lgbm, "
        "xgb, catboost",
    ]


# --------------------------------------------------------------------------- JSON Schema


def test_spec_schema_command_prints_and_writes_the_schema(tmp_path, capsys):
    from hpsearch.cli.app import main

    assert main(["spec", "schema"]) == 0
    printed = capsys.readouterr().out
    schema = json.loads(printed)
    assert list(schema["properties"]) == list(Spec.model_fields)
    assert list(schema["properties"]) == [
        "name", "data", "split", "metric", "space", "spaces", "sampler", "budget", "resources",
        "training", "pruner", "output", "storage", "ensemble",
    ]  # fmt: skip
    assert schema["required"] == ["name", "data"]  # `space`, `spaces` or the pipeline's mix
    assert schema["additionalProperties"] is False
    out = tmp_path / "spec.schema.json"
    assert main(["spec", "schema", "-o", str(out)]) == 0
    assert out.read_text() == printed
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left
    assert main(["spec", "schema", "-o", str(tmp_path / "spec.schema.json" / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot write the schema to ")


@pytest.mark.parametrize("example", ["examples/breast_cancer.yaml", "examples/competition/spec.yaml", "EXAMPLE"])  # fmt: skip
def test_example_specs_validate_against_the_schema(example):
    from jsonschema import Draft202012Validator

    from hpsearch.core.spec import spec_json_schema

    schema = spec_json_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    raw = yaml.safe_load(EXAMPLE if example == "EXAMPLE" else (ROOT / example).read_text())
    assert list(validator.iter_errors(raw)) == []
    for bad in ({"budgte": {}}, {"budget": {"n_trials": 0}}, {"sampler": {"name": "tpee"}}):
        assert list(validator.iter_errors({**raw, **bad})), bad


# --------------------------------------------------------------------------- YAML safety

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.timeout(60)  # unguarded, this one takes minutes and gigabytes
def test_an_alias_bomb_is_refused_unexpanded(tmp_path, capsys):
    from hpsearch.cli.app import main

    path = tmp_path / "spec.yaml"
    path.write_text(BOMB + "name: *i\n")
    assert len(path.read_bytes()) < 1024
    assert main(["run", str(path), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"error: spec file '{path}' line 5, column 4: YAML aliases expand this value beyond "
        "10000 added values (an alias bomb); it is refused unread. Fix: write the values out, "
        "or repeat an anchored value (*name) a few times rather than nesting aliases of "
        "aliases.\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


def test_a_few_aliases_are_fine_and_a_recursive_one_is_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE) + "ensemble: {trees: &t [rf, et]}\n")
    assert load_spec(path).ensemble.trees == ("rf", "et")
    path.write_text("name: &n [*n]\n")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert str(exc.value) == (
        f"spec file '{path}' line 1, column 7: a YAML alias refers to the value that contains "
        "it (a recursive alias). Fix: replace the alias (*name) inside its own anchored value "
        "by a plain value."
    )


def test_duplicate_keys_are_refused_naming_the_key_and_lines(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: a\ndata:\n  train: sklearn:iris\n  target: y\n  target: z\n")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert str(exc.value) == (
        f"spec file '{path}' line 5, column 3: duplicate key 'target', first on line 4; YAML "
        "would keep only the last one. Fix: keep one 'target' key in this mapping and delete "
        "the other."
    )


def test_a_spec_file_that_is_not_utf8_is_named_with_the_fix(tmp_path, capsys):
    from hpsearch.cli.app import main

    path = tmp_path / "spec.yaml"
    path.write_bytes("name: café\ndata: {train: nowhere.csv}\nspace: nowhere\n".encode("latin-1"))
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: spec file '{path}' is not UTF-8 text (byte 0xe9 at offset 9). "
        "Fix: save it as UTF-8, for example `iconv -f latin1 -t utf-8 OLD.yaml > NEW.yaml`.\n"
    )


def test_space_files_share_the_yaml_refusals(tmp_path):
    from search_spaces.space import SpaceError, load_space

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB + "name: x\nfamily: dense\nparams: {n: *i}\n")
    with pytest.raises(SpaceError) as exc:
        load_space(str(bomb))
    assert str(exc.value) == (
        f"{bomb} (line 5, column 4): YAML aliases expand this value beyond 10000 added values "
        "(an alias bomb); it is refused unread. Fix: write the values out, or repeat an "
        "anchored value (*name) a few times rather than nesting aliases of aliases."
    )
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: x\ndescription: café\nfamily: dense\nparams: {}\n".encode("latin-1"))
    with pytest.raises(SpaceError) as exc:
        load_space(str(latin))
    assert str(exc.value) == (
        f"{latin}: not UTF-8 text (byte 0xe9 at offset 24). Fix: save it as UTF-8, for "
        "example `iconv -f latin1 -t utf-8 OLD.yaml > NEW.yaml`."
    )


def test_messages_quote_at_most_about_200_characters_of_a_value():
    long = "x y" * 2000
    for d in (spec(name=long), spec(metric=long), spec(data={"image_shape": [0] * 3000}),
              spec(sampler={"name": long}), spec(**{long: 1})):  # fmt: skip
        (msg,) = errors_of(d)
        assert len(msg) < 200 + 400, msg[:300]
        assert "..." in msg


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
    assert str(e.value).splitlines()[-1].strip() == (
        "spec field 'training.trial_fn': unknown trainer 'kerass'. Fix: did you mean 'keras'? "
        "use one of: auto, keras, trees, or one of your own as `trial_fn: "
        "mypackage.trials:train`, or leave it out"
    )


def test_a_null_space_is_as_if_left_out(tmp_path):
    from hpsearch.core.spec import require_one_space

    d = make_spec_dict(tmp_path)
    d["space"] = None  # `space:` with nothing after it
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(d))
    spec = load_spec(path)
    assert spec.space is None and spec.spaces is None  # the pipeline's default mix
    with pytest.raises(SpecError, match="space"):
        require_one_space(spec)  # `hpsearch run` needs one space: a one-line refusal
