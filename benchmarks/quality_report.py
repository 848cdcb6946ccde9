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
    head = "| table | metric | " + " | ".join(t for t, _ in SUMMARY_COLUMNS) + " |"
    lines = [head, "|---|---|" + "---:|" * len(SUMMARY_COLUMNS)]
    for table in tables:
        found = [_find(rows, table, prefix) for _, prefix in SUMMARY_COLUMNS]
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
