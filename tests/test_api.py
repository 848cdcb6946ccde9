"""The public Python API: hpsearch.load_spec / run / load_run and the Run object."""

from __future__ import annotations

import numpy as np
import pytest

import hpsearch
from tests.conftest import make_spec_dict

ORACLE = "hpsearch.search.testing:oracle"


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    spec = hpsearch.load_spec(
        make_spec_dict(tmp, budget={"n_trials": 5}, training={"trial_fn": ORACLE})
    )
    return hpsearch.run(spec, progress=False)


def test_run_returns_the_run_it_wrote(finished):
    assert isinstance(finished, hpsearch.Run)
    assert finished.summary.n_complete == 5
    assert finished.name == "bc-test"
    assert finished.metric == "log_loss" and finished.direction == "minimize"


def test_trials_frame_has_one_row_per_trial_with_params(finished):
    frame = finished.trials()
    assert list(frame.columns)[:4] == ["number", "state", "value", "params"]
    assert list(frame["number"]) == [0, 1, 2, 3, 4]
    assert set(frame["state"]) == {"COMPLETE"}
    assert all(isinstance(p, dict) and "learning_rate" in p for p in frame["params"])
    assert finished.trials(state="fail").empty
    with pytest.raises(hpsearch.UserError, match="is not a trial state"):
        finished.trials(state="done")


def test_best_is_the_lowest_log_loss(finished):
    frame = finished.trials()
    best = finished.best()
    assert best["value"] == frame["value"].min()
    assert best["number"] == int(frame.loc[frame["value"].idxmin(), "number"])
    assert best["metric"] == "log_loss"
    assert best["params"] == frame.loc[frame["value"].idxmin(), "params"]


def test_load_run_reads_the_same_trials(finished):
    again = hpsearch.load_run(finished.path)
    assert again.trials()["value"].tolist() == finished.trials()["value"].tolist()
    st = again.status()
    assert st["trials"] == {"COMPLETE": 5}
    assert st["best"]["number"] == finished.best()["number"]


def test_predictions_are_the_saved_arrays(finished):
    from hpsearch.core import metrics
    from hpsearch.core.store import RunDir

    rd = RunDir(finished.path)
    pred = finished.predictions(2, "holdout")
    assert np.array_equal(pred, np.load(rd.trial_path(2) / "holdout_pred.npy"))
    # the trial's value is its valid score: recompute it from the valid predictions
    from hpsearch.core.data import load_prepared

    prepared = load_prepared(rd.path, finished.spec)
    value = metrics.score("log_loss", prepared.y["valid"], finished.predictions(2, "valid"))
    assert value == pytest.approx(finished.trials()["value"][2], rel=1e-6)
    with pytest.raises(hpsearch.UserError, match="has no predictions"):
        finished.predictions(2, "train")
    with pytest.raises(hpsearch.UserError, match="has no finished trial 99"):
        finished.predictions(99, "holdout")


def test_model_of_a_trial_without_model_is_refused(finished):
    with pytest.raises(hpsearch.UserError, match="has no saved model"):
        finished.model(0)


def test_load_run_on_a_directory_that_is_no_run(tmp_path):
    with pytest.raises(hpsearch.RunDirError, match=r"is not a run directory \(no run.json\)"):
        hpsearch.load_run(tmp_path)


def test_spec_is_the_frozen_spec(finished):
    spec = finished.spec
    assert spec.name == "bc-test"
    assert spec.budget.n_trials == 5


def _doc_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown page, less those marked <!-- not run -->."""
    import re

    blocks = []
    for m in re.finditer(r"(<!-- not run -->\s*)?```python\n(.*?)```", text, re.S):
        if not m.group(1):
            blocks.append(m.group(2))
    return blocks


@pytest.mark.slow
def test_docs_api_examples_run(ray_session, tmp_path, monkeypatch, capsys):
    """Every example of docs/api.md runs, in order, in one namespace (real Keras trials)."""
    from tests.conftest import ROOT

    blocks = _doc_blocks((ROOT / "docs" / "api.md").read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_api"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"docs/api.md block {i + 1}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"docs/api.md block {i + 1} failed: {exc!r}\n{code}") from exc
    assert list(namespace["run"].trials()["state"]) == ["COMPLETE"] * 4
    assert [state for _, state in namespace["seen"].ended].count("COMPLETE") == 4
    assert namespace["ens"].predict(namespace["rows"]).shape == (3,)
    mix = namespace["mix"]  # the pipeline of two families: 2 trials each, one ensemble
    assert [(f["family"], f["n_complete"]) for f in mix.families] == [
        ("tabular_mlp", 2),
        ("wide_deep", 2),
    ]
    assert mix.ensemble.info["runs"] == [str(p.resolve()) for p in mix.runs]
