"""What gets loaded from a run directory is what was written there.

Every artifact (prediction ``.npy`` files, ``model.keras``, ``model.joblib``, and the
JSON that describes them) is loaded only once its bytes match the SHA-256 recorded
when it was written: in ``trial.json``, ``tree.json`` and ``ensemble.json``. A planted
pickle is never unpickled; a rebuild refits a tree whose files changed. Symbolic links
that lead out of a run directory (or stand where hpsearch writes) are refused before
any work.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import ensembles
from ensembles.cli import main as ens_main
from hpsearch.core.data import load_table
from hpsearch.core.errors import RunDirError
from hpsearch.core.runs import Run
from hpsearch.core.spec import load_spec
from hpsearch.core.store import RunDir
from hpsearch.search.driver import run_search
from hpsearch.search.trial import TrialResult
from tests.conftest import make_spec_dict

ORACLE = "hpsearch.search.testing:oracle"
SPEC = {
    "budget": {"n_trials": 3},
    "sampler": {"name": "random", "seed": 0},
    "training": {"trial_fn": ORACLE},
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
    }


class _Payload:
    """A pickle that, when loaded, creates ``marker`` (``open(marker, "w")``)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


@pytest.fixture(scope="module")
def pristine(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    spec = load_spec(make_spec_dict(root, **SPEC))
    assert run_search(spec, progress=False).n_complete == 3
    return Path(spec.output)


@pytest.fixture
def run(pristine, tmp_path):
    """A copy of the run (study included), without trees or ensembles."""
    dst = tmp_path / "copy" / "run"
    shutil.copytree(pristine, dst, ignore=shutil.ignore_patterns("trees", "ensembles", ".lock"))
    return dst


@pytest.fixture
def new_rows(tmp_path):
    path = tmp_path / "new.csv"
    load_table("sklearn:breast_cancer").drop(columns=["target"]).head(5).to_csv(path, index=False)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --------------------------------------------------------------------------- recorded hashes


def test_every_file_written_is_recorded_with_its_sha256(run):
    for rec in RunDir(run).trials():
        names = sorted(p.name for p in rec.path.iterdir() if p.name not in ("trial.json", "tb"))
        assert sorted(rec.info["files"]) == names
        assert all(rec.info["files"][n] == _sha(rec.path / n) for n in names)
    ens = ensembles.build(run, trees=("rf",), method="mean", name="base")
    tree = run / "trees" / "rf"
    info = json.loads((tree / "tree.json").read_text())
    assert sorted(info["files"]) == ["holdout_pred.npy", "model.joblib", "valid_pred.npy"]
    assert all(info["files"][n] == _sha(tree / n) for n in info["files"])
    assert ens.info["files"] == {"holdout_pred.npy": _sha(ens.out_dir / "holdout_pred.npy")}
    for m in ens.info["members"]:
        if m["kind"] == "tree":
            assert m["files"] == {
                "tree.json": _sha(tree / "tree.json"),
                "model.joblib": _sha(tree / "model.joblib"),
            }
        else:  # oracle trials save no model: only their trial.json is recorded
            tdir = RunDir(run).trial_path(m["trial"])
            assert m["files"] == {"trial.json": _sha(tdir / "trial.json")}


# --------------------------------------------------------------------------- planted pickle


def test_a_planted_joblib_payload_is_never_loaded(run, new_rows, tmp_path, capsys):
    """The reproduction: a pickle payload planted as trees/rf/model.joblib in a run that
    has an ensemble. Neither `ensembles predict` nor `ensembles build` runs it."""
    base = ensembles.build(run, trees=("rf",), method="mean", name="base")
    marker = tmp_path / "PWNED"
    control = tmp_path / "control"
    import joblib

    joblib.load(io.BytesIO(_payload(control)))  # the payload is real: loading it runs it
    assert control.exists()
    model = run / "trees" / "rf" / "model.joblib"
    model.write_bytes(_payload(marker))
    out = tmp_path / "out.csv"

    assert ens_main(["predict", str(base.out_dir), str(new_rows), "-o", str(out)]) == 2
    line = _one_error_line(capsys)
    assert line == (
        f"error: member rf: model {model} does not match the SHA-256 recorded in "
        f"{base.out_dir / 'ensemble.json'}: it was changed or truncated after it was written, "
        "so it is not loaded. Fix: build the ensemble again (`ensembles build RUN_DIR`), which "
        "fits the tree again."
    )
    with pytest.raises(RunDirError, match="does not match the SHA-256"):
        ensembles.load(base.out_dir).predict(new_rows)
    assert not marker.exists() and not out.exists()

    # rebuilding refits the tree instead of "reusing the saved fit"
    assert ens_main(["build", str(run), "--trees", "rf", "--name", "again"]) == 0
    err = capsys.readouterr().err
    assert "reusing the saved fit" not in err
    assert (
        f"fitting rf (1/1) ({model} does not match the SHA-256 recorded in its tree.json)..." in err
    )
    assert not marker.exists()
    tree = json.loads((run / "trees" / "rf" / "tree.json").read_text())
    assert model.read_bytes() != _payload(marker)
    assert tree["files"]["model.joblib"] == _sha(model)

    # the old ensemble names the refit; the new one checks out and predicts with the tree
    assert ens_main(["predict", str(base.out_dir), str(new_rows), "-o", str(out)]) == 2
    assert "was refitted or removed after ensemble" in _one_error_line(capsys)
    from ensembles.predict import _Members

    again = ensembles.load(run / "ensembles" / "again")
    members = _Members(again, load_table(new_rows))
    (rf,) = [m for m in again.info["members"] if m["kind"] == "tree"]
    info, models = members.verify(rf)  # the checked bytes of each model: one here
    assert info["fit_id"] == rf["fit_id"] and models == [model.read_bytes()]
    assert members.predict(rf, (info, models)).shape == (5,)
    assert not marker.exists()


def test_a_planted_pickle_with_a_matching_tree_json_is_refused_by_the_ensemble(
    run, new_rows, tmp_path
):
    """Whoever rewrites tree.json's hash too still meets the hash in ensemble.json."""
    base = ensembles.build(run, trees=("rf",), method="mean", name="base")
    marker = tmp_path / "PWNED"
    tree_dir = run / "trees" / "rf"
    (tree_dir / "model.joblib").write_bytes(_payload(marker))
    info = json.loads((tree_dir / "tree.json").read_text())
    info["files"]["model.joblib"] = _sha(tree_dir / "model.joblib")
    (tree_dir / "tree.json").write_text(json.dumps(info))
    with pytest.raises(RunDirError) as err:
        ensembles.load(base.out_dir).predict(new_rows)
    assert str(err.value).startswith(f"member rf: record {tree_dir / 'tree.json'} does not match")
    assert not marker.exists()


def test_an_ensemble_without_recorded_hashes_is_refused(run, new_rows):
    base = ensembles.build(run, trees=("rf",), method="mean", name="base")
    path = base.out_dir / "ensemble.json"
    info = json.loads(path.read_text())
    for m in info["members"]:
        del m["files"]
    path.write_text(json.dumps(info))
    with pytest.raises(RunDirError) as err:
        ensembles.load(base.out_dir).predict(new_rows)
    label = info["members"][0]["label"]
    assert str(err.value) == (
        f"ensemble {base.out_dir}: member {label} has no SHA-256 recorded for its files "
        "(built before ensembles recorded them), so it is not loaded. Fix: build the ensemble "
        "again (`ensembles build RUN_DIR`)."
    )


def test_a_tree_fitted_before_hashes_were_recorded_is_fitted_again(run):
    ensembles.build(run, trees=("hgb",), name="a")
    path = run / "trees" / "hgb" / "tree.json"
    old = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in old.items() if k != "files"}))
    ensembles.build(run, trees=("hgb",), name="b")
    fresh = json.loads(path.read_text())
    assert fresh["fit_id"] != old["fit_id"] and fresh["files"]["model.joblib"]
    (run / "trees" / "hgb" / "notes.txt").write_text("not ours")  # an unrecorded file
    ensembles.build(run, trees=("hgb",), name="c")
    assert json.loads(path.read_text())["fit_id"] != fresh["fit_id"]
    assert not (run / "trees" / "hgb" / "notes.txt").exists()


# --------------------------------------------------------------------------- trial files


def test_changed_planted_or_missing_trial_files_are_refused(run):
    r = Run(run)
    tdir = RunDir(run).trial_path(1)
    pred = tdir / "holdout_pred.npy"
    original = r.predictions(1, "holdout")
    np.save(pred, original[::-1])  # same shape, other values
    with pytest.raises(RunDirError) as err:
        r.predictions(1, "holdout")
    assert str(err.value) == (
        f"trial 1: holdout prediction file {pred} does not match the SHA-256 recorded in "
        f"{tdir / 'trial.json'}: it was changed or truncated after it was written, so it is "
        f"not loaded. Fix: restore {tdir} from a copy of the run, or delete that trial "
        "directory (an ensemble then leaves the trial out)."
    )
    with pytest.raises(RunDirError) as err:
        ensembles.build(run, trees=())
    assert str(err.value).startswith(
        f"run {run}: trial 1: holdout prediction file {pred} does not match the SHA-256"
    )
    assert not (run / "ensembles").exists()
    # a file the trial never wrote (this run has no test set)
    np.save(tdir / "test_pred.npy", original)
    with pytest.raises(RunDirError, match=r"test_pred.npy is not recorded in .*trial.json"):
        r.predictions(1, "test")
    # a recorded file that is gone
    (tdir / "valid_pred.npy").unlink()
    with pytest.raises(RunDirError, match=r"valid_pred.npy is missing, though .* records it"):
        r.predictions(1, "valid")


def test_a_run_written_before_hashes_were_recorded_is_refused(run):
    path = RunDir(run).trial_path(0) / "trial.json"
    info = json.loads(path.read_text())
    info["files"] = {name: [3] for name in info["files"]}  # the old record: shapes
    path.write_text(json.dumps(info))
    with pytest.raises(RunDirError) as err:
        Run(run).predictions(0, "holdout")
    assert str(err.value).endswith(
        "records no SHA-256 for the files (written before hpsearch recorded them), so it is not "
        "loaded. Fix: run the search again into a new `output` (`hpsearch run SPEC`): this run "
        "was made before hpsearch recorded the SHA-256 of its files."
    )


def _tiny_model_bytes(tmp_path: Path, units: int) -> bytes:
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units)])
    path = tmp_path / f"m{units}.keras"
    model.save(path)
    return path.read_bytes()


def test_run_model_loads_only_the_recorded_model(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.write_meta({"name": "hand-made"})
    for number, model in ((0, _tiny_model_bytes(tmp_path, 2)), (1, None)):
        result = TrialResult(
            number=number,
            state="COMPLETE",
            value=0.5,
            predictions={"valid": np.zeros(4)},
            model_bytes=model,
        )
        rd.write_trial(result, {"units": 2})
    run = Run(rd.path)
    assert run.model(0).layers[-1].units == 2  # the recorded model loads
    path = rd.trial_path(0) / "model.keras"
    path.write_bytes(_tiny_model_bytes(tmp_path, 5))
    with pytest.raises(RunDirError, match=r"trial 0: model .*model.keras does not match"):
        run.model(0)
    planted = rd.trial_path(1) / "model.keras"
    shutil.copy(path, planted)  # trial 1 saved no model
    with pytest.raises(RunDirError, match=r"trial 1: model .*model.keras is not recorded in"):
        run.model(1)


# --------------------------------------------------------------------------- symbolic links


def test_a_symlinked_trial_directory_is_refused_before_resume(run, tmp_path, capsys):
    from hpsearch.cli.app import main as hp_main

    outside = tmp_path / "elsewhere" / "00001"
    shutil.move(RunDir(run).trial_path(1), outside)
    RunDir(run).trial_path(1).symlink_to(outside, target_is_directory=True)
    spec = tmp_path / "copy" / "spec.yaml"
    spec.write_text(yaml.safe_dump(make_spec_dict(run.parent, **SPEC)))
    before, before_out = _snapshot(run), _snapshot(outside)
    assert hp_main(["run", str(spec), "--resume", "--quiet"]) == 2
    link = RunDir(run).trial_path(1)
    assert _one_error_line(capsys) == (
        f"error: run directory {run}: {link} is a symbolic link to {outside.resolve()}, "
        "outside the run directory. Fix: replace the link with a copy of what it points to, "
        "or remove it; hpsearch neither reads nor writes a run directory through such links."
    )
    assert _snapshot(run) == before and _snapshot(outside) == before_out
    # the write itself is guarded as well: no rmtree through the link
    with pytest.raises(RunDirError, match="is a symbolic link to"):
        RunDir(run).write_trial(TrialResult(number=1, state="COMPLETE"), {})
    assert _snapshot(outside) == before_out


def test_a_symlinked_ensembles_folder_is_refused_before_any_work(run, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run / "ensembles").symlink_to(outside, target_is_directory=True)
    assert ens_main(["build", str(run), "--trees", "rf", "--name", "x", "--quiet"]) == 2
    assert _one_error_line(capsys) == (
        f"error: run directory {run}: {run / 'ensembles'} is a symbolic link to {outside.resolve()}, "
        "outside the run directory. Fix: replace the link with a copy of what it points to, "
        "or remove it; hpsearch neither reads nor writes a run directory through such links."
    )
    assert list(outside.iterdir()) == [] and not (run / "trees").exists()
    # a link inside the run to a place inside it, where nothing is written, is fine
    (run / "ensembles").unlink()
    (run / "spec-link.yaml").symlink_to(run / "spec.yaml")
    RunDir(run).check_links()
    # but none where hpsearch writes and deletes, even pointing inside the run
    (run / "ensembles").symlink_to(run / "data", target_is_directory=True)
    with pytest.raises(RunDirError, match="where hpsearch writes and deletes"):
        RunDir(run).check_links()
