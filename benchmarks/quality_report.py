"""The quality benchmark's results as Markdown: the row table, the summary, the whole doc.

A result row is a dict: ``table``, ``metric``, ``method``, ``score`` (the test score,
None when not measured), ``wall_s``, ``cross_fitted`` (the blend's cross-fitted score
on the holdout rows, pipeline rows only) and ``note``. ``write_doc`` renders
``docs/benchmarks/quality.md`` from the results of one run (``results.json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

GREATER_IS_BETTER = {"roc_auc"}

# the methods of the summary, in column order: (column title, row method prefix)
SUMMARY_COLUMNS = (
    ("HGB", "HistGradientBoosting"),
    ("LightGBM", "LightGBM"),
    ("pipeline holdout", "pipeline holdout: submitted"),
    ("pipeline CV", "pipeline CV: submitted"),
    ("AutoGluon", "AutoGluon"),
)


def fmt_score(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.2f}"
    if magnitude >= 1:
        return f"{value:.4f}"
    return f"{value:.5f}"


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def better(metric: str, a: float | None, b: float | None) -> bool:
    """Whether score ``a`` beats ``b`` under ``metric`` (False when either is missing)."""
    if a is None or b is None:
        return False
    return a > b if metric in GREATER_IS_BETTER else a < b


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    """One Markdown line per table x method."""
    lines = [
        "| table | metric | method | test score | wall s | holdout cross-fitted | note |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    r["table"],
                    r["metric"],
                    r["method"],
                    fmt_score(r.get("score")),
                    fmt_seconds(r.get("wall_s")),
                    fmt_score(r.get("cross_fitted")),
                    r.get("note") or "",
                )
            )
            + " |"
        )
    return "\n".join(lines)


def _find(rows: list[dict[str, Any]], table: str, prefix: str) -> dict[str, Any] | None:
    for r in rows:
        if r["table"] == table and r["method"].startswith(prefix):
            return r
    return None


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """Table x (HGB, LightGBM, pipeline holdout, pipeline CV, AutoGluon): the test score,
    the best of the row in bold."""
    tables = list(dict.fromkeys(r["table"] for r in rows))
    # a method no table has a row for (a mode not run) gets no column
    columns = [(t, p) for t, p in SUMMARY_COLUMNS if any(_find(rows, x, p) for x in tables)]
    head = "| table | metric | " + " | ".join(t for t, _ in columns) + " |"
    lines = [head, "|---|---|" + "---:|" * len(columns)]
    for table in tables:
        found = [_find(rows, table, prefix) for _, prefix in columns]
        metric = next(r["metric"] for r in rows if r["table"] == table)
        scores = [r.get("score") if r else None for r in found]
        present = [s for s in scores if s is not None]
        best = None
        if present:
            best = max(present) if metric in GREATER_IS_BETTER else min(present)
        cells = [
            (f"**{fmt_score(s)}**" if s is not None and s == best else fmt_score(s)) for s in scores
        ]
        lines.append(f"| {table} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tally(rows: list[dict[str, Any]], a: str, b: str, field: str = "score") -> tuple[int, int]:
    """(tables where method prefix ``a`` beats ``b`` on ``field``, tables with both)."""
    wins = both = 0
    for table in dict.fromkeys(r["table"] for r in rows):
        ra, rb = _find(rows, table, a), _find(rows, table, b)
        if ra is None or rb is None or ra.get(field) is None or rb.get(field) is None:
            continue
        both += 1
        wins += better(ra["metric"], ra[field], rb[field])
    return wins, both


COMPARISONS = (
    # (method prefix a, method prefix b, field, how the sentence names them)
    ("pipeline holdout: submitted", "HistGradientBoosting", "score", "the pipeline (holdout) beats default HGB"),
    ("pipeline holdout: submitted", "LightGBM", "score", "the pipeline (holdout) beats default LightGBM"),
    ("pipeline holdout: submitted", "AutoGluon", "score", "the pipeline (holdout) beats AutoGluon"),
    ("pipeline CV: submitted", "HistGradientBoosting", "score", "the pipeline (CV) beats default HGB"),
    ("pipeline CV: submitted", "LightGBM", "score", "the pipeline (CV) beats default LightGBM"),
    ("pipeline CV: submitted", "AutoGluon", "score", "the pipeline (CV) beats AutoGluon"),
    ("pipeline holdout: nelder-mead", "pipeline holdout: best single", "score",
     "Nelder-Mead beats the best single member on the test rows (holdout mode)"),
    ("pipeline holdout: nelder-mead", "pipeline holdout: best single", "cross_fitted",
     "Nelder-Mead's cross-fitted score beats the best single member's (holdout mode)"),
    ("pipeline CV: nelder-mead", "pipeline CV: best single", "score",
     "Nelder-Mead beats the best single member on the test rows (CV mode)"),
    ("pipeline CV: nelder-mead", "pipeline CV: best single", "cross_fitted",
     "Nelder-Mead's cross-fitted score beats the best single member's (CV mode)"),
    ("pipeline holdout: submitted", "pipeline holdout: correlation filter on", "score",
     "the default selection (near-duplicates dropped) beats the correlation filter at 0.95, "
     "on the test rows (holdout mode)"),
    ("pipeline CV: submitted", "pipeline CV: correlation filter on", "score",
     "the default selection beats the correlation filter at 0.95, on the test rows (CV mode)"),
    ("pipeline CV: submitted", "pipeline CV: correlation filter on", "cross_fitted",
     "the default selection beats the correlation filter at 0.95, cross-fitted (CV mode)"),
)  # fmt: skip


def tallies_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparisons issue 14 asks about, counted over the tables of this run."""
    lines = []
    for a, b, field, sentence in COMPARISONS:
        wins, both = tally(rows, a, b, field)
        if both:
            lines.append(f"- {sentence}: {wins} of {both} tables.")
    return "\n".join(lines) or "- nothing to compare."


def _relative_gap(metric: str, a: float, b: float) -> float:
    """How much worse ``a`` is than ``b``, relative to ``b`` (0 when ``a`` is as good or
    better)."""
    worse = (b - a) if metric in GREATER_IS_BETTER else (a - b)
    return max(0.0, worse) / abs(b) if b else (0.0 if worse <= 0 else math.inf)


def family_rows(rows: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    """The CV pipeline's per-family rows of ``table`` (they carry ``kind`` and ``weight``)."""
    return [
        r
        for r in rows
        if r["table"] == table and r["method"].startswith("pipeline CV: family ") and "kind" in r
    ]


def targets_markdown(rows: list[dict[str, Any]], limit_s: float = 600.0) -> str:
    """Issue 15's targets, counted over the tables of this run: the CV pipeline against
    AutoGluon (matches or beats it, else within 1%), the best network family's out-of-fold
    score within 5% of the best tree family's, a network family's members with weight in the
    blend, and every table's pipeline within ``limit_s`` seconds."""
    tables = list(dict.fromkeys(r["table"] for r in rows))
    beat = close = versus = 0
    net_close = nets = net_weight = 0
    in_time = timed = 0
    gaps = []
    for table in tables:
        cv, ag = _find(rows, table, "pipeline CV: submitted"), _find(rows, table, "AutoGluon")
        if cv and cv.get("wall_s") is not None:
            timed += 1
            in_time += cv["wall_s"] <= limit_s
        if cv and ag and cv.get("score") is not None and ag.get("score") is not None:
            versus += 1
            gap = _relative_gap(cv["metric"], cv["score"], ag["score"])
            beat += gap == 0.0
            close += 0.0 < gap <= 0.01
            gaps.append(f"{table} {gap:.1%}")
        fams = family_rows(rows, table)
        net = [r for r in fams if r["kind"] == "network" and r.get("cross_fitted") is not None]
        tree = [r for r in fams if r["kind"] == "tree" and r.get("cross_fitted") is not None]
        if net and tree:
            nets += 1
            pick = max if fams[0]["metric"] in GREATER_IS_BETTER else min
            best_net = pick(r["cross_fitted"] for r in net)
            best_tree = pick(r["cross_fitted"] for r in tree)
            net_close += _relative_gap(fams[0]["metric"], best_net, best_tree) <= 0.05
            net_weight += sum(r.get("weight") or 0.0 for r in net) > 0
    lines = []
    if versus:
        lines.append(
            f"- The CV pipeline matches or beats AutoGluon on {beat} of {versus} tables and is "
            f"within 1% of it on {close} more (how far behind: {', '.join(gaps)}); target: "
            "at least 3 matched or beaten, the others within 1%."
        )
    if nets:
        lines.append(
            f"- The best network family's out-of-fold score is within 5% of the best tree "
            f"family's on {net_close} of {nets} tables (target 4 of 6); a network family's "
            f"members have weight in the blend on {net_weight} of {nets} (target 4 of 6)."
        )
    if timed:
        lines.append(
            f"- The CV pipeline finished within {limit_s / 60:g} minutes on {in_time} of "
            f"{timed} tables."
        )
    return "\n".join(lines)


def tables_markdown(metas: list[dict[str, Any]]) -> str:
    lines = [
        "| table | source | rows | features | train / test rows | task | metric | what |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for m in metas:
        kind = m["task"] + (f" ({len(m['classes'])} classes)" if m["task"] == "multiclass" else "")
        extras = [f"dates: {', '.join(m['dates'])}"] if m.get("dates") else []
        extras += [f"text: {', '.join(m['text'])}"] if m.get("text") else []
        what = m["note"] + (f" ({'; '.join(extras)})" if extras else "")
        lines.append(
            f"| {m['name']} | {m['source']} | {m['rows']:,} | {m['features']} | "
            f"{m['train_rows']:,} / {m['test_rows']:,} | {kind} | {m['metric']} | {_cell(what)} |"
        )
    return "\n".join(lines)


def write_doc(path: str | Path, results: dict[str, Any], static: dict[str, str]) -> Path:
    """``docs/benchmarks/quality.md`` from one run's ``results`` (``rows``, ``tables``,
    ``context``) and the fixed text of ``static`` (``intro``, ``method``, ``commands``,
    ``notes``)."""
    ctx = results["context"]
    rows = results["rows"]
    parts = [
        "# Quality benchmark",
        static["intro"],
        "## This run",
        ctx["run_line"] + "\n\n" + ctx["machine"],
        "## Tables",
        tables_markdown(results["tables"]),
        "## Results",
        "Test score of each method (bold: the best of the row). Lower is better except roc_auc.",
        summary_markdown(rows),
        tallies_markdown(rows),
        targets_markdown(rows) or "- no CV pipeline rows to count issue 15's targets on.",
        "### Every row",
        rows_markdown(rows),
        "## How each row is made",
        static["method"],
        "## Reproduce",
        static["commands"],
        "## Notes",
        static["notes"],
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(p.strip("\n") for p in parts) + "\n")
    return path
