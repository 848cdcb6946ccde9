"""Human-readable views of an ensemble, made from ``ensemble.json`` alone.

``summary_text`` is the short table printed by ``ensembles build`` and
``ensembles report``; ``write_report`` writes ``report.md`` and its plots
(``weights.png``, ``correlation.png``, ``scores.png``) so that a lost report can
be regenerated from the json at any time. Plots use matplotlib's Agg canvas
directly (no pyplot, no global backend state).

A cross-validated ensemble (``"mode": "cv"``) is fitted on the out-of-fold predictions
of every labelled row (its fit split is ``oof``); its views say so, and read
``n_oof`` / ``oof_score`` where a holdout ensemble has ``n_holdout`` / ``holdout_score``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from hpsearch.core import atomic

__all__ = [
    "PLOTS",
    "REPORT_MD",
    "fit_rows_words",
    "fit_split",
    "report_markdown",
    "summary_text",
    "write_report",
]

REPORT_MD = "report.md"
PLOTS = ("weights.png", "correlation.png", "scores.png")


def _fmt(value: Any, digits: int = 5) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def _weight(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _member_name(m: dict[str, Any]) -> str:
    return str(m["label"])


def fit_split(info: dict[str, Any]) -> str:
    """The split an ensemble's blend was fitted on: ``oof`` (cross-validated runs: the
    out-of-fold predictions of every labelled row) or ``holdout``."""
    return "oof" if info.get("mode") == "cv" else "holdout"


def fit_rows_words(info: dict[str, Any]) -> str:
    """``"455 out-of-fold rows"`` or ``"91 holdout rows"``."""
    split = fit_split(info)
    n = info.get(f"n_{split}")
    return f"{n} out-of-fold rows" if split == "oof" else f"{n} holdout rows"


def _cv_words(info: dict[str, Any]) -> str:
    """How a cross-validated ensemble's rows were predicted ("" for a holdout one)."""
    cv = info.get("cv") or {}
    if fit_split(info) != "oof":
        return ""
    return (
        f"cross-validated runs ({cv.get('folds')} folds, folds fingerprint "
        f"{str(cv.get('folds_fingerprint'))[:12]}): every labelled row predicted by the fold "
        "model that did not see it"
    )


def _fit_column(info: dict[str, Any]) -> str:
    return "oof" if fit_split(info) == "oof" else "holdout"


def _direction_words(info: dict[str, Any]) -> str:
    return "higher is better" if info.get("direction") == "maximize" else "lower is better"


def _auto_fallback(info: dict[str, Any]) -> bool:
    """``auto`` chose by default: no method could be cross-fitted (too few rows)."""
    return bool((info.get("scores") or {}).get("auto", {}).get("fallback"))


def _auto_words(info: dict[str, Any]) -> str:
    if info.get("requested_method") == "auto":
        if _auto_fallback(info):
            return " (auto: no method could be cross-fitted; chosen by default)"
        return " (auto: the best cross-fitted score)"
    return ""


def summary_text(info: dict[str, Any]) -> str:
    """A short table: methods x fitted / cross-fitted (chosen marked), then the members."""
    method = info["method"]
    split = fit_split(info)
    rows = "out-of-fold rows" if split == "oof" else "holdout rows"
    lines = [
        f"ensemble {info['name']}: {len(info['members'])} member(s) from "
        f"{len(info['runs'])} run(s), method {method}{_auto_words(info)}",
        f"metric {info['metric']} ({_direction_words(info)}) on {fit_rows_words(info)}; "
        + (
            f"cross-fitted = the blend {info['folds']}-fold cross-fitted on those rows"
            if split == "oof"
            else f"cross-fitted = {info['folds']}-fold out-of-fold on the {rows}"
        ),
    ]
    if split == "oof":
        lines.append(_cv_words(info))
    lines += [
        "",
        f"  {'method':<13} {'fitted':>10} {'cross-fitted':>13}",
    ]
    for name, s in info["scores"].items():
        mark = "*" if name == method else " "
        lines.append(
            f"{mark} {name:<13} {_fmt(s.get('fitted')):>10} {_fmt(s.get('cross_fitted')):>13}"
        )
    width = max([len(_member_name(m)) for m in info["members"]] + [6])
    col = _fit_column(info)
    lines += ["", f"  {'member':<{width}} {'kind':<8} {'weight':>8} {'valid':>10} {col:>10}"]
    for m in info["members"]:
        lines.append(
            f"  {_member_name(m):<{width}} {m['kind']:<8} {_weight(m.get('weight')):>8} "
            f"{_fmt(m.get('valid_score')):>10} {_fmt(m.get(f'{split}_score')):>10}"
        )
    if info.get("refit"):
        lines.append(
            f"  refit: {_refit_words(info)}; their test predictions come from the refit models"
        )
    if info.get("dropped"):
        lines.append(f"  ({len(info['dropped'])} candidate(s) left out; see ensemble.json)")
    if info.get("out_dir"):
        lines.append(f"\nfiles: {info['out_dir']}")
    return "\n".join(lines)


def _refit_words(info: dict[str, Any]) -> str:
    refit = [m for m in info["members"] if m.get("refit")]
    rows = {m["refit_model"].get("n_rows") for m in refit}
    where = f" on {rows.pop()} labelled rows" if len(rows) == 1 else ""
    return f"{len(refit)} of {len(info['members'])} member(s) trained again{where}"


def _report_refit(info: dict[str, Any]) -> list[str]:
    if not info.get("refit"):
        return []
    out = [
        "",
        "## Refit",
        "",
        f"Built with `--refit`: {_refit_words(info)} (train, valid and holdout), after "
        "selection and blending. The blend weights fitted on the original members' holdout "
        "predictions are applied to the refit members: the test predictions "
        "(`test_pred.npy`, `submission.csv`) and `ensembles predict` come from the refit "
        "models; the holdout predictions and every score above are the original members'.",
        "",
        "| member | refit | test predictions from | how |",
        "|---|---|---|---|",
    ]
    for m in info["members"]:
        r = m.get("refit_model") or {}
        if m.get("refit") and m["kind"] == "network":
            how = (
                f"{r.get('epochs')} epoch(s) on {r.get('n_rows')} rows (early stopping kept "
                f"{r.get('best_epoch')} on {r.get('n_train')} train rows)"
            )
        elif m.get("refit"):
            how = f"same parameters on {r.get('n_rows')} rows"
        else:
            how = m.get("refit_reason") or "-"
        source = f"`{r.get('dir')}`" if m.get("refit") else "the original member"
        out.append(
            f"| {_member_name(m)} | {'yes' if m.get('refit') else 'no'} | {source} | {how} |"
        )
    return out


def report_markdown(info: dict[str, Any]) -> str:
    """``report.md``: scores, members, refit members, dropped candidates and the plots."""
    out = _report_header(info) + _report_scores(info) + _report_members(info)
    out += _report_refit(info)
    out += [
        "",
        "## Plots",
        "",
        "![weights](weights.png)",
        "",
        f"![error correlation on the {_fit_rows(info)}](correlation.png)",
        "",
        "![scores](scores.png)",
        "",
    ]
    return "\n".join(out)


def _fit_rows(info: dict[str, Any]) -> str:
    return "out-of-fold rows" if fit_split(info) == "oof" else "holdout rows"


def _report_header(info: dict[str, Any]) -> list[str]:
    split = fit_split(info)
    cv = [f"- {_cv_words(info)}; every score below is out of fold"] if split == "oof" else []
    return [
        f"# Ensemble {info['name']}",
        "",
        f"- method: **{info['method']}**{_auto_words(info)} ({info['task']}, metric `{info['metric']}`, {_direction_words(info)})",
        f"- runs: {', '.join(f'`{r}`' for r in info['runs'])}",
        *cv,
        f"- {_fit_rows(info)}: {info[f'n_{split}']}; folds for cross-fitting: {info['folds']}; "
        f"top_k: {info['top_k']}; max_corr: {_off(info['max_corr'])}; "
        f"margin: {_off(info.get('margin'))}; trees: {', '.join(info['trees']) or 'none'}",
        *_eligibility_line(info),
        f"- built: {info['created']}",
        "",
    ]


def _off(value: Any) -> str:
    return "none" if value is None else f"{value:g}"


def _eligibility_line(info: dict[str, Any]) -> list[str]:
    cut = info.get("eligibility")
    if not cut or cut.get("allowed_gap") is None:
        return []
    return [
        f"- eligible: candidates within {_fmt(cut['allowed_gap'])} of the best "
        f"({cut['best']}, {_fmt(cut['best_score'])}): margin {_off(cut['margin'])} x "
        f"spread {_fmt(cut['spread'])} of the validation scores"
    ]


def _report_scores(info: dict[str, Any]) -> list[str]:
    rows = _fit_rows(info)
    out = [
        "## Scores",
        "",
        f"*Fitted*: the blend fitted and scored on the same {rows} (optimistic). "
        f"*Cross-fitted*: each of {info['folds']} folds of the {rows} predicted by a blend "
        "fitted on the other folds (an honest estimate of the score on new rows)."
        + (
            " *auto*: no method could be cross-fitted (too few rows), so nothing was "
            f"compared and {info['method']} was used by default; its row repeats that "
            "method's fitted score."
            if _auto_fallback(info)
            else " *auto*: the method was chosen by the best cross-fitted score; its row repeats "
            "the chosen method's fitted score beside a *nested* cross-fitted one (in each fold "
            "the method is chosen again on the other folds), the honest estimate of choosing."
            if "auto" in info["scores"]
            else ""
        ),
        "",
        "| method | fitted | cross-fitted |",
        "|---|---:|---:|",
    ]
    for name, s in info["scores"].items():
        label = f"**{name}** (chosen)" if name == info["method"] else name
        out.append(f"| {label} | {_fmt(s.get('fitted'))} | {_fmt(s.get('cross_fitted'))} |")
    errors = {n: s["error"] for n, s in info["scores"].items() if s.get("error")}
    if errors:
        out += [""] + [f"- {n}: {e}" for n, e in errors.items()]
    return out


def _report_members(info: dict[str, Any]) -> list[str]:
    split = fit_split(info)
    out = [
        "",
        "## Members",
        "",
        f"| member | kind | run | weight | valid | {_fit_column(info)} |",
        "|---|---|---|---:|---:|---:|",
    ]
    for m in info["members"]:
        out.append(
            f"| {_member_name(m)} | {m['kind']} | `{m['run']}` | {_weight(m.get('weight'))} | "
            f"{_fmt(m.get('valid_score'))} | {_fmt(m.get(f'{split}_score'))} |"
        )
    if split == "oof":
        out += [
            "",
            "A member's *valid* score is its out-of-fold score as its trial or tree recorded "
            f"it; *oof* is the metric on its out-of-fold predictions of the {fit_rows_words(info)}.",
        ]
    if info["method"] == "stack":
        out += [
            "",
            "Weights of `stack` are the meta-model's coefficients on the members' logits "
            "(multiclass: each member's share of the absolute coefficients).",
        ]
    if info.get("dropped"):
        out += [
            "",
            "## Left out",
            "",
            "| candidate | kind | valid | reason |",
            "|---|---|---:|---|",
        ]
        for d in info["dropped"]:
            out.append(
                f"| {d['label']} | {d['kind']} | {_fmt(d.get('valid_score'))} | {d['reason']} |"
            )
    return out


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic.write_bytes(path, buf.getvalue())


def _weights_plot(info: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    labels = [_member_name(m) for m in info["members"]]
    weights = [float(m.get("weight") or 0.0) for m in info["members"]]
    fig = Figure(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.5))
    ax = fig.add_subplot()
    colors = ["tab:green" if m["kind"] == "tree" else "tab:blue" for m in info["members"]]
    ax.bar(range(len(labels)), weights, color=colors)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_ylabel("weight" if info["method"] != "stack" else "coefficient")
    ax.set_title(f"{info['method']} weights (blue: networks, green: trees)")
    ax.axhline(0, color="black", linewidth=0.5)
    _save(fig, path)


def _correlation_plot(info: dict[str, Any], path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    corr = info["correlation"]
    labels = corr["labels"]
    C = np.asarray(corr["matrix"], dtype=float).reshape(len(labels), len(labels))
    size = max(4.0, 0.5 * len(labels) + 2.5)
    fig = Figure(figsize=(size, size * 0.85))
    ax = fig.add_subplot()
    im = ax.imshow(C, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    if len(labels) <= 12:
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{C[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(f"error correlation on the {_fit_rows(info)}")
    _save(fig, path)


def _scores_plot(info: dict[str, Any], path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    names = list(info["scores"])
    fitted = [info["scores"][n].get("fitted") for n in names]
    cross = [info["scores"][n].get("cross_fitted") for n in names]
    x = np.arange(len(names))
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    nan = float("nan")
    ax.bar(x - 0.2, [nan if v is None else v for v in fitted], 0.4, label="fitted")
    ax.bar(x + 0.2, [nan if v is None else v for v in cross], 0.4, label="cross-fitted")
    ticks = [f"{n} *" if n == info["method"] else n for n in names]
    ax.set_xticks(x, ticks)
    ax.set_ylabel(f"{info['metric']} ({_direction_words(info)})")
    values = [v for v in fitted + cross if v is not None]
    if values:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.3 or abs(hi) * 0.05 or 1.0
        bottom = lo - pad if lo < 0 else max(0.0, lo - pad)
        ax.set_ylim(bottom, hi + pad)
    ax.legend()
    scores = "out-of-fold scores" if fit_split(info) == "oof" else "holdout scores"
    ax.set_title(f"{scores} by blend method (* chosen)")
    _save(fig, path)


def write_report(out_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write ``report.md`` and the plots into ``out_dir``; returns the report path."""
    out_dir = Path(out_dir)
    _weights_plot(info, out_dir / "weights.png")
    _correlation_plot(info, out_dir / "correlation.png")
    _scores_plot(info, out_dir / "scores.png")
    path = out_dir / REPORT_MD
    atomic.write_text(path, report_markdown(info))
    return path
