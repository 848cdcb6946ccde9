"""ensembles.selection: error matrices, correlations without NaN, diverse top-K selection."""

from __future__ import annotations

import numpy as np
import pytest

from ensembles.selection import correlation_matrix, eligibility_cut, error_matrix, select_diverse


def _members(n=300, m=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return np.stack([y + rng.normal(size=n) for _ in range(m)]), y


def test_error_matrix_per_task():
    y = np.array([0, 1, 1])
    P = np.array([[0.2, 0.7, 0.4]])
    np.testing.assert_allclose(error_matrix(P, y, "binary"), [[0.2, -0.3, -0.6]])
    np.testing.assert_allclose(
        error_matrix(np.stack([1 - P, P], axis=2), y, "binary"), [[0.2, -0.3, -0.6]]
    )
    Pm = np.array([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]])
    E = error_matrix(Pm, [0, 2], "multiclass")
    np.testing.assert_allclose(E, [[-0.5, 0.3, 0.2, 0.1, 0.1, -0.2]])
    np.testing.assert_allclose(error_matrix([[1.0, 3.0]], [2.0, 2.0], "regression"), [[-1.0, 1.0]])
    with pytest.raises(ValueError, match="unknown task"):
        error_matrix(P, y, "ranking")


def test_correlation_matrix_matches_numpy_and_handles_constants():
    P, y = _members()
    C = correlation_matrix(P, y, "regression")
    np.testing.assert_allclose(C, np.corrcoef(P - y), atol=1e-12)
    # a perfect model (constant zero error) and a constant-offset model
    P2 = np.vstack([P, y[None, :], y[None, :] + 1.0])
    C2 = correlation_matrix(P2, y, "regression")
    assert not np.isnan(C2).any()
    np.testing.assert_allclose(np.diag(C2), 1.0)
    assert C2[5, :5].tolist() == [0.0] * 5
    assert C2[5, 6] == 0.0  # different constant errors: not duplicates
    # two identical perfect models are duplicates
    C3 = correlation_matrix(np.vstack([y, y]), y, "regression")
    np.testing.assert_allclose(C3, 1.0)


def test_two_identical_candidates_only_one_selected():
    P, y = _members(m=3)
    P = np.vstack([P, P[1:2]])  # candidate "d" duplicates "b"
    names = ["a", "b", "c", "d"]
    sel, dropped = select_diverse(names, [1.0, 0.9, 1.2, 0.95], P, y, "regression", "rmse", top_k=4)
    assert sel == ["b", "a", "c"]
    assert dropped == {"d": "correlated 1.000 with b"}


def test_direction_top_k_and_reasons():
    P, y = _members(m=5, seed=1)
    names = [f"trial_{i}" for i in range(5)]
    scores = [0.5, 0.9, 0.7, 0.8, 0.6]  # accuracy-like: greater is better
    Pc = np.stack([np.clip(1 / (1 + np.exp(-p)), 0, 1) for p in P])
    yc = (y > 0).astype(int)
    res = select_diverse(names, scores, Pc, yc, "binary", "accuracy", top_k=2, max_corr=1.0)
    assert res.selected == ["trial_1", "trial_3"]
    assert res.dropped["trial_2"].startswith("outside top K")
    assert set(res.dropped) == {"trial_0", "trial_2", "trial_4"}
    # the same scores read as a loss rank the other way
    res = select_diverse(names, scores, Pc, yc, "binary", "log_loss", top_k=2, max_corr=1.0)
    assert res.selected == ["trial_0", "trial_4"]


def test_correlated_candidates_are_skipped_and_next_ones_fill_top_k():
    rng = np.random.default_rng(2)
    y = rng.normal(size=500)
    base = y + rng.normal(size=500)
    P = np.stack([base, base + 0.01 * rng.normal(size=500), y + rng.normal(size=500)])
    sel, dropped = select_diverse(
        ["x", "x2", "z"], [1.0, 1.01, 1.02], P, y, "regression", "rmse", top_k=2
    )
    assert sel == ["x", "z"]
    assert dropped["x2"].startswith("correlated 1.000 with x") or dropped["x2"].startswith(
        "correlated 0.99"
    )


def test_always_bypasses_top_k_but_not_correlation():
    P, y = _members(m=4, seed=3)
    P = np.vstack([P, P[0:1]])  # "tree_dup" duplicates "a"
    names = ["a", "b", "c", "tree", "tree_dup"]
    scores = {"a": 1.0, "b": 1.1, "c": 1.2, "tree": 5.0, "tree_dup": 6.0}
    sel, dropped = select_diverse(
        names, scores, P, y, "regression", "rmse", top_k=1, always=("tree", "tree_dup")
    )
    assert sel == ["a", "tree"]
    assert dropped["b"].startswith("outside top K") and dropped["c"].startswith("outside top K")
    assert dropped["tree_dup"] == "correlated 1.000 with a"
    sel, _ = select_diverse(
        names[:4], scores, P[:4], y, "regression", "rmse", top_k=0, always=["tree"]
    )
    assert sel == ["tree"]


def test_missing_scores_and_bad_inputs():
    P, y = _members(m=3)
    sel, dropped = select_diverse(
        ["a", "b", "c"], [1.0, None, float("nan")], P, y, "regression", "rmse", top_k=None
    )
    assert sel == ["a"]
    assert dropped == {"b": "no validation score", "c": "no validation score"}
    with pytest.raises(ValueError, match="names"):
        select_diverse(["a", "b"], [1.0, 2.0], P, y, "regression", "rmse", top_k=2)
    with pytest.raises(ValueError, match="always"):
        select_diverse(
            ["a", "b", "c"], [1, 2, 3], P, y, "regression", "rmse", top_k=2, always=["t"]
        )
    with pytest.raises(ValueError, match="unknown metric"):
        select_diverse(["a", "b", "c"], [1, 2, 3], P, y, "regression", "nope", top_k=2)


def test_multiclass_selection():
    rng = np.random.default_rng(4)
    n, k = 200, 3
    y = rng.integers(0, k, n)

    def member():
        z = np.eye(k)[y] + rng.normal(size=(n, k))
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    a, b = member(), member()
    P = np.stack([a, a.copy(), b])
    sel, dropped = select_diverse(
        [0, 1, 2], [0.5, 0.6, 0.7], P, y, "multiclass", "log_loss", top_k=3
    )
    assert sel == [0, 2] and 1 in dropped
    C = correlation_matrix(P, y, "multiclass")
    assert C.shape == (3, 3) and not np.isnan(C).any()


# --------------------------------------------------------------------------- eligibility


def _log_loss_members(n=400, seed=5):
    """Five good binary members (log loss about 0.5) whose errors share most of their
    noise, and one twice as bad with independent errors."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logit = np.where(y == 1, 1.2, -1.2)
    shared = rng.normal(size=n)

    def member(z):
        return 1 / (1 + np.exp(-z))

    good = [member(logit + 1.2 * shared + 0.3 * rng.normal(size=n)) for _ in range(5)]
    bad = member(0.3 * logit + 2.0 * rng.normal(size=n))
    return np.stack([*good, bad]), y


def test_a_candidate_twice_as_bad_with_uncorrelated_errors_is_not_eligible():
    from hpsearch.core.metrics import score

    P, y = _log_loss_members()
    names = ["g0", "g1", "g2", "g3", "g4", "bad"]
    scores = [score("log_loss", y, p) for p in P]
    assert scores[-1] > 1.9 * min(scores[:-1])  # twice as bad
    C = correlation_matrix(P, y, "binary")
    # its errors are its own (binary residuals share y), the good ones' are not
    assert C[-1, :-1].max() < 0.7 and C[:-1, :-1].min() > 0.95
    # without the cut, diversity picks the bad one over the good correlated ones
    sel, dropped = select_diverse(names, scores, P, y, "binary", "log_loss", top_k=3, max_corr=0.95)
    assert "bad" in sel
    sel, dropped = select_diverse(
        names, scores, P, y, "binary", "log_loss", top_k=3, max_corr=0.95, margin=3
    )
    assert "bad" not in sel
    cut = eligibility_cut(scores, "log_loss", 3)
    gap = scores[-1] - min(scores)
    assert dropped["bad"] == (
        f"not eligible: worse than the best ({names[cut.best]}) by {gap:.4g} > "
        f"margin {cut.allowed:.4g} (3 x spread {cut.spread:.4g})"
    )
    assert all(not r.startswith("not eligible") for n, r in dropped.items() if n != "bad")


def test_good_correlated_trees_are_kept_when_the_filter_is_off():
    P, y = _log_loss_members()
    P = P[:4]  # four good members with errors correlated about 0.9
    names = ["trial_0", "rf", "et", "hgb"]
    scores = [0.50, 0.51, 0.52, 0.49]
    trees = ("rf", "et", "hgb")
    sel, dropped = select_diverse(
        names, scores, P, y, "binary", "log_loss", top_k=5, max_corr=0.8, always=trees, margin=3
    )
    assert len(sel) == 1 and all(r.startswith("correlated") for r in dropped.values())
    sel, dropped = select_diverse(
        names, scores, P, y, "binary", "log_loss", top_k=5, max_corr=None, always=trees, margin=3
    )
    assert sel == ["hgb", "trial_0", "rf", "et"] and dropped == {}


def test_the_margin_scales_with_the_spread_of_the_scores():
    P, y = _members(m=6, seed=6)
    names = list("abcdef")
    tight = [1.00, 1.01, 1.02, 1.03, 1.04, 1.20]
    wide = [1.0 + 10 * (s - 1.0) for s in tight]  # the same ranking, ten times the spread
    sel_tight, dropped = select_diverse(
        names, tight, P, y, "regression", "rmse", top_k=None, max_corr=None, margin=3
    )
    assert sel_tight == list("abcde") and dropped["f"].startswith("not eligible")
    sel_wide, _ = select_diverse(
        names, wide, P, y, "regression", "rmse", top_k=None, max_corr=None, margin=3
    )
    assert sel_wide == list("abcde")  # f is as far out relative to the spread
    # the allowed gap is margin x spread: ten times the spread, ten times the gap
    c_tight, c_wide = eligibility_cut(tight, "rmse", 3), eligibility_cut(wide, "rmse", 3)
    assert c_wide.spread == pytest.approx(10 * c_tight.spread)
    assert c_wide.allowed == pytest.approx(10 * c_tight.allowed)
    assert c_tight.spread == pytest.approx(1.4826 * 0.015)  # 1.4826 x MAD
    # a larger margin admits f
    sel, _ = select_diverse(names, tight, P, y, "regression", "rmse", None, None, margin=10)
    assert sel == names
    # greater-is-better metrics measure the gap the other way
    acc = [0.90, 0.89, 0.88, 0.87, 0.86, 0.70]
    sel, dropped = select_diverse(names, acc, P, y, "regression", "rmse", None, None, margin=3)
    assert "a" in dropped and "f" in sel  # read as a loss, 0.70 is the best


def test_near_identical_scores_do_not_exclude_everyone_and_none_disables_the_cut():
    P, y = _members(m=4, seed=7)
    names = list("abcd")
    same = [0.5, 0.5, 0.5, 0.5000001]
    cut = eligibility_cut(same, "log_loss", 3)
    assert cut.spread == pytest.approx(0.01)  # the floor: 2 % of the best score
    sel, _ = select_diverse(names, same, P, y, "regression", "rmse", None, None, margin=3)
    assert sel == names
    spread_out = [0.5, 0.6, 5.0, 50.0]
    sel, dropped = select_diverse(
        names, spread_out, P, y, "regression", "rmse", None, None, margin=None
    )
    assert sel == names and dropped == {}
    assert eligibility_cut(spread_out, "rmse", float("inf")).allowed == float("inf")
    assert eligibility_cut([None, float("nan")], "rmse", 3).best is None
    with pytest.raises(ValueError, match="margin must be >= 0"):
        eligibility_cut(spread_out, "rmse", -1)


def test_groups_cap_top_k_per_group():
    """Candidates of several runs (a pipeline's families): each run brings its best top_k,
    so a weaker family still has members in the blend."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    P = np.clip(y + rng.normal(0, 0.6, (6, 200)), 0.01, 0.99)
    names = ["a0", "a1", "a2", "b0", "b1", "b2"]
    scores = [0.30, 0.31, 0.32, 0.33, 0.34, 0.35]  # every run-a candidate beats run b's
    one = select_diverse(names, scores, P, y, "binary", "log_loss", top_k=2, max_corr=None)
    assert one.selected == ["a0", "a1"] and one.dropped["b0"] == "outside top K (K=2)"
    groups = {n: f"/runs/out/{n[0]}" for n in names}
    per = select_diverse(
        names, scores, P, y, "binary", "log_loss", top_k=2, max_corr=None, groups=groups
    )
    assert per.selected == ["a0", "a1", "b0", "b1"]
    assert per.dropped == {"a2": "outside top K of a (K=2)", "b2": "outside top K of b (K=2)"}
