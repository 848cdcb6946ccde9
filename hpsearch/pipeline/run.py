"""``hpsearch pipeline SPEC``: train.csv + test.csv in, submission.csv and a report out.

One command for a Kaggle-style competition: the search (``run_search``), the
ensemble of its best diverse networks and tree models (``build_ensemble``),
the checks a competition applies to a submission, and a copy of the checked
submission at ``OUTPUT/submission.csv`` beside the run.

The pipeline cross-validates by default (``split: {folds: 5}``, :data:`DEFAULT_FOLDS`):
every labelled row trains the members and the blend is fitted on out-of-fold
predictions (docs/ensembles.md). :func:`pipeline_spec` decides the split: ``folds``
(``hpsearch pipeline --folds K``; 0 for the train/valid/holdout split), else the spec's
``split`` when it names ``folds``, ``valid`` or ``holdout``, else the split of the run
being resumed, else :data:`DEFAULT_FOLDS` folds. ``hpsearch run`` keeps the spec's
split as written (the holdout split by default).

Several families (``spaces: {space: share, ...}``, or :data:`DEFAULT_MIX` when the spec
names neither ``space`` nor ``spaces``) are searched one after another in one Ray session,
each in a sibling run ``OUTPUT/<space>/`` (a complete run directory) with its share of the
budget: ``budget.timeout_s`` x share, and ``budget.n_trials`` x share (at least 1) when the
budget names ``n_trials``. Every sibling has the same split, so one ensemble
(``OUTPUT/ensembles/<name>/``) blends the candidates of all of them; ``OUTPUT/pipeline.json``
records the spaces, the shares and each family's state, time and best, and
``--resume`` continues from it (:func:`run_mix`). A spec that sets no budget gets
:data:`DEFAULT_TIMEOUT_S` seconds of search. One ``space`` keeps the layout of one run in
``OUTPUT``.
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.core.errors import RunDirError, StudyStopped, UserError
from hpsearch.search.callbacks import Callback

DEFAULT_FOLDS = 5  # the pipeline's split when neither the command nor the spec chooses one
_SPLIT_CHOICES = ("folds", "valid", "holdout")  # spec split keys that choose the split

# the families a pipeline spec that names neither `space` nor `spaces` searches, with
# their shares of the budget: two boosted-tree families and the tabular network
DEFAULT_MIX = {"lightgbm": 0.35, "catboost": 0.2, "tabular_realmlp": 0.45}
# the search time of a pipeline spec that sets no budget (neither `budget.n_trials` nor
# `budget.timeout_s`): search plus the ensemble build within 10 minutes on 2 CPUs
DEFAULT_TIMEOUT_S = 300.0
# the trial cap of a budget given in time only (the time ends the search first)
TIME_BUDGET_TRIALS = 1000
# a family with less of its time left than this has spent its share
MIN_FAMILY_S = 1.0
PIPELINE_JSON = "pipeline.json"


@dataclass
class PipelineResult:
    """What a pipeline made. With several families (``spaces``), ``run_dir`` is ``OUTPUT``
    (it holds ``pipeline.json`` and the sibling runs ``runs``), ``search`` maps each
    family (its directory name) to its ``SearchSummary`` (None: skipped on --resume, its
    share spent), ``families`` are the records of ``pipeline.json`` and ``stopped`` the
    reasons of families that stopped early."""

    run_dir: Path
    ensemble_dir: Path
    submission: Path | None
    report: Path | None
    search: Any
    ensemble: Any
    families: list[dict[str, Any]] = field(default_factory=list)
    runs: list[Path] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def summary_text(self) -> str:
        lines = [*family_table(self.families), ""] if self.families else []
        lines += [self.ensemble.summary_text(), ""]
        if self.submission is not None:
            lines.append(f"submission: {self.submission}  (checked: ids, columns, values)")
        else:
            lines.append("no test set in the spec (data.test): no submission written")
        if self.report is not None:
            lines.append(f"report:     {self.report}")
        return "\n".join(lines)


def _check_folds(folds: Any) -> int | None:
    """The ``folds`` option as a split: K, or None for the train/valid/holdout split (0)."""
    from hpsearch.core.spec import MAX_FOLDS

    if (
        isinstance(folds, bool)
        or not isinstance(folds, int)
        or not (folds == 0 or 2 <= folds <= MAX_FOLDS)
    ):
        raise UserError(
            f"--folds {folds!r}: must be 0 or from 2 to {MAX_FOLDS}. Fix: give the number of "
            f"cross-validation folds (e.g. --folds {DEFAULT_FOLDS}), or --folds 0 for the "
            "train/valid/holdout split."
        )
    return folds or None


def _resumed_folds(spec: Any) -> tuple[bool, int | None]:
    """(whether the spec's output holds a run, and that run's folds: K or None). The
    output of several families holds sibling runs: the first one with a ``run.json``."""
    from hpsearch.core.remote import is_uri
    from hpsearch.core.store import RunDir

    if is_uri(str(spec.output)):
        return False, None
    out = Path(spec.output)
    dirs = [out]
    if (out / PIPELINE_JSON).is_file():
        dirs = sorted(p for p in out.iterdir() if (p / "run.json").is_file())
    for path in dirs:
        rd = RunDir(path)
        if not rd.run_json.is_file():
            continue
        try:
            split = rd.read_meta().get("split") or {}
        except UserError:  # a damaged run.json: the search names it
            return False, None
        return True, split.get("folds") or None
    return False, None


def pipeline_spec(spec: Any, folds: int | None = None, resume: bool = False) -> Any:
    """The spec the pipeline runs: ``spec`` with its split decided. ``folds`` (the
    ``--folds`` option) wins: K folds, or 0 for the train/valid/holdout split. Else a spec
    whose ``split`` names ``folds``, ``valid`` or ``holdout`` is kept as written; else, on
    ``resume``, the split of the run in ``output``; else :data:`DEFAULT_FOLDS` folds."""
    split = spec.split
    if folds is not None:
        chosen = _check_folds(folds)
    elif set(_SPLIT_CHOICES) & set(split.model_fields_set):
        return spec
    else:
        found, run_folds = _resumed_folds(spec) if resume else (False, None)
        chosen = run_folds if found else DEFAULT_FOLDS
    if chosen == split.folds:
        return spec
    return spec.model_copy(update={"split": split.model_copy(update={"folds": chosen})})


# --------------------------------------------------------------------------- the mix


def pipeline_mix(spec: Any) -> dict[str, float] | None:
    """The spaces the pipeline searches with their shares (summing to 1): the spec's
    ``spaces``, else :data:`DEFAULT_MIX` when it names neither ``space`` nor ``spaces``;
    None for one ``space`` (one run in ``output``, as ``hpsearch run`` makes)."""
    if spec.spaces is not None:
        return dict(spec.spaces)
    if spec.space is not None:
        return None
    total = sum(DEFAULT_MIX.values())
    return {name: share / total for name, share in DEFAULT_MIX.items()}


def _budget_set(spec: Any) -> set[str]:
    """The budget keys the spec sets itself (``n_trials``, ``timeout_s``)."""
    if "budget" not in spec.model_fields_set:
        return set()
    fields = set(spec.budget.model_fields_set)
    if spec.budget.timeout_s is None:
        fields.discard("timeout_s")
    return fields


def default_budget(spec: Any, n_trials: int | None = None) -> Any:
    """``spec`` with :data:`DEFAULT_TIMEOUT_S` seconds of search (and up to
    :data:`TIME_BUDGET_TRIALS` trials) when it sets no budget and ``n_trials`` (the
    ``--n-trials`` option) is not given; else ``spec`` as it is."""
    from hpsearch.core.spec import BudgetSpec

    if n_trials is not None or _budget_set(spec):
        return spec
    budget = BudgetSpec(n_trials=TIME_BUDGET_TRIALS, timeout_s=DEFAULT_TIMEOUT_S)
    return spec.model_copy(update={"budget": budget})


@dataclass
class Family:
    """One family of a pipeline: its space, its sibling run and its share of the budget."""

    space: str  # a library name or a .yaml file (absolute)
    name: str  # the sibling run's directory under OUTPUT
    share: float
    timeout_s: float | None  # its share of budget.timeout_s
    n_trials: int  # its share of the trials (TIME_BUDGET_TRIALS for a budget in time only)
    spec: Any  # the sibling run's spec


def split_trials(total: int, shares: list[float]) -> list[int]:
    """``total`` trials split by ``shares`` (largest remainders), at least 1 each."""
    raw = [total * s for s in shares]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[: max(0, total - sum(counts))]:
        counts[i] += 1
    return [max(1, c) for c in counts]


def _tree_space(space: str) -> bool:
    """Whether ``space`` (a library name or a space file) searches a tree family (the
    mix's ensemble then fits no fixed trees unless the spec names ``ensemble.trees``)."""
    from search_spaces import load_space
    from search_spaces.families import is_tree_family

    return is_tree_family(load_space(space).family)


def plan_families(spec: Any, mix: dict[str, float], n_trials: int | None = None) -> list[Family]:
    """The families of ``mix`` with their budgets and sibling specs. Each sibling run is
    ``output/<space>`` named ``<name>-<space>``, with the spec's split (so they share their
    folds), ``budget.timeout_s`` x share, and ``n_trials`` (or ``budget.n_trials`` when the
    spec sets it) x share, at least 1; without either, a budget in time only. When the
    mix has a tree family and the spec does not name ``ensemble.trees``, the ensemble
    fits no fixed trees (the searched tree families are the trees)."""
    from hpsearch.core.spec import BudgetSpec, space_dir_name

    spec = default_budget(spec, n_trials)
    total_s = spec.budget.timeout_s
    if n_trials is None and "n_trials" in _budget_set(spec):
        n_trials = spec.budget.n_trials
    shares = list(mix.values())
    counts = (
        split_trials(int(n_trials), shares)
        if n_trials is not None
        else [TIME_BUDGET_TRIALS] * len(mix)
    )
    ensemble = spec.ensemble
    trees_set = "ensemble" in spec.model_fields_set and "trees" in ensemble.model_fields_set
    if not trees_set and any(_tree_space(space) for space in mix):
        ensemble = ensemble.model_copy(update={"trees": ()})
    out = Path(spec.output)
    families = []
    for (space, share), count in zip(mix.items(), counts, strict=True):
        name = space_dir_name(space)
        timeout = None if total_s is None else total_s * share
        budget = BudgetSpec(n_trials=count, timeout_s=timeout)
        sibling = spec.model_copy(
            update={
                "name": f"{spec.name}-{name}",
                "space": space,
                "spaces": None,
                "output": str(out / name),
                "budget": budget,
                "ensemble": ensemble,
            }
        )
        families.append(Family(space, name, share, timeout, count, sibling))
    return families


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _spaces_record(mix: dict[str, float]) -> dict[str, float]:
    return {space: round(share, 9) for space, share in mix.items()}


def _new_state(spec: Any, mix: dict[str, float], families: list[Family]) -> dict[str, Any]:
    return {
        "format": 1,
        "name": spec.name,
        "created": _now(),
        "updated": _now(),
        "spaces": _spaces_record(mix),
        "split": spec.split.model_dump(),
        "families": {
            f.name: {
                "family": f.name,
                "space": f.space,
                "share": round(f.share, 9),
                "timeout_s": f.timeout_s,
                "n_trials": f.n_trials,
                "state": "pending",
                "elapsed_s": 0.0,
                "wall_s": 0.0,
                "n_complete": 0,
                "n_failed": 0,
                "n_pruned": 0,
                "best": None,
                "stopped": None,
            }
            for f in families
        },
        "ensemble": None,
        "submission": None,
    }


def read_pipeline(out: str | Path) -> dict[str, Any] | None:
    """``OUTPUT/pipeline.json``, or None when there is none; RunDirError when damaged."""
    from hpsearch.core import atomic

    path = Path(out) / PIPELINE_JSON
    if not path.is_file():
        return None
    try:
        state = atomic.read_json(path)
    except (OSError, ValueError) as exc:
        raise RunDirError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}). Fix: restore it, or start "
            "the pipeline again with a new `output`."
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("families"), dict):
        raise RunDirError(
            f"{path} is not a pipeline record (no `families`). Fix: restore it, or start the "
            "pipeline again with a new `output`."
        )
    return state


def _write_state(out: Path, state: dict[str, Any]) -> None:
    from hpsearch.core import atomic

    state["updated"] = _now()
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / PIPELINE_JSON, state)


def _check_output(out: Path, mix: dict[str, float], resume: bool) -> dict[str, Any] | None:
    """The ``pipeline.json`` a --resume continues (None: a new pipeline); UserError or
    RunDirError when ``out`` holds something else, or a pipeline of other spaces."""
    from hpsearch.core.spec import space_dir_name

    state = read_pipeline(out)
    if (out / "run.json").is_file():
        raise RunDirError(
            f"output {out} holds a run of one space (run.json), not a pipeline of several "
            "(`spaces`). Fix: set `output` to a new directory, or set `space` to that run's "
            "space to continue it."
        )
    if state is None:
        if out.exists() and not out.is_dir():
            raise RunDirError(
                f"output {out} is a file, not a directory. Fix: set `output` to a directory "
                "path (it is created when missing)."
            )
        found = {p.name for p in out.iterdir()} if out.exists() else set()
        if found - {space_dir_name(s) for s in mix}:
            raise RunDirError(
                f"output {out} exists and holds no pipeline ({PIPELINE_JSON}). Fix: choose a "
                "new `output` directory; hpsearch never overwrites files."
            )
        if found and not resume:  # stopped while its first family was set up
            raise RunDirError(
                f"output {out} holds the set-up of a pipeline interrupted before it recorded "
                f"{PIPELINE_JSON} ({', '.join(sorted(found))}). Fix: add --resume to continue "
                "it, or set `output` to a new directory."
            )
        return None
    if not resume:
        raise RunDirError(
            f"output {out} already holds the pipeline {state.get('name')!r} ({PIPELINE_JSON}). "
            "Fix: add --resume to continue it, or set `output` to a new directory."
        )
    if state.get("spaces") != _spaces_record(mix):
        raise UserError(
            f"cannot resume {out}: the spec's spaces {_spaces_text(mix)} differ from those "
            f"the pipeline was started with {_spaces_text(state.get('spaces') or {})} "
            f"({PIPELINE_JSON}). Fix: restore its `spaces` (and shares), or set `output` to "
            "a new directory."
        )
    return state


def _spaces_text(mix: dict[str, Any]) -> str:
    from hpsearch.core.spec import space_dir_name

    return "{" + ", ".join(f"{space_dir_name(k)}: {float(v):.3g}" for k, v in mix.items()) + "}"


class _Ledger(Callback):
    """Keeps a family's record of ``pipeline.json`` up to date while it runs: its state
    when the search starts, its time and counts after trials (every few seconds), and the
    summary when the search ends, whatever ended it."""

    EVERY_S = 2.0

    def __init__(self, out: Path, state: dict[str, Any], family: str, spent_s: float):
        self.out, self.state, self.family, self.spent_s = out, state, family, spent_s
        self.loop: Any = None
        self.last = 0.0

    @property
    def record(self) -> dict[str, Any]:
        return self.state["families"][self.family]

    def on_search_start(self, loop: Any) -> None:
        self.loop = loop
        self.record["state"] = "running"
        self._write()

    def on_trial_end(self, payload: Any, result: Any) -> None:
        if time.time() - self.last < self.EVERY_S:
            return
        done, failed, pruned, best = self.loop.counts()
        self.record.update(
            elapsed_s=round(self.spent_s + time.time() - self.loop.t0, 3),
            n_complete=done,
            n_failed=failed,
            n_pruned=pruned,
            best=None if best is None else {"number": best[0], "value": best[1]},
        )
        self._write()

    def on_search_end(self, summary: Any) -> None:
        self.record.update(
            elapsed_s=round(self.spent_s + summary.elapsed_s, 3),
            n_complete=summary.n_complete,
            n_failed=summary.n_failed,
            n_pruned=summary.n_pruned,
            best=(
                None
                if summary.best_number is None
                else {"number": summary.best_number, "value": summary.best_value}
            ),
            stopped=summary.stopped,
        )
        self._write()

    def _write(self) -> None:
        _write_state(self.out, self.state)
        self.last = time.time()


def _prefix(fam: Family, i: int, n: int, state: dict[str, Any]) -> str:
    """The progress line's start: the family searched and the best of the finished ones."""
    bests = [
        f"{name} {rec['best']['value']:.4g}"
        for name, rec in state["families"].items()
        if name != fam.name and rec.get("best") and rec.get("state") != "running"
    ]
    done = f"; best {', '.join(bests)}" if bests else ""
    return f"[{fam.name} {i}/{n}{done}] "


def _fmt_best(rec: dict[str, Any], metric: str) -> str:
    best = rec.get("best")
    if not best:
        return "no complete trial"
    return f"best {metric} {best['value']:.5g} (trial {best['number']})"


def family_table(records: list[dict[str, Any]]) -> list[str]:
    """Lines of a table of the families: share, state, time, trials, best value."""
    lines = [
        f"{'family':<22} {'share':>5} {'state':<11} {'time s':>7} {'trials':>7}  best",
    ]
    for rec in records:
        best = rec.get("best")
        value = "-" if not best else f"{best['value']:.5g} (#{best['number']})"
        trials = rec["n_complete"] + rec["n_failed"] + rec["n_pruned"]
        lines.append(
            f"{rec['family']:<22} {rec['share']:>5.2f} {rec['state']:<11} "
            f"{rec['elapsed_s']:>7.0f} {trials:>7}  {value}"
        )
    return lines


def _left(fam: Family, rec: dict[str, Any]) -> tuple[float | None, bool]:
    """(the family's time left, whether its share is spent)."""
    left = None if fam.timeout_s is None else fam.timeout_s - float(rec.get("elapsed_s") or 0)
    n_done = rec.get("n_complete", 0) + rec.get("n_failed", 0) + rec.get("n_pruned", 0)
    ran = rec.get("state") != "pending"
    spent = ran and ((left is not None and left < MIN_FAMILY_S) or n_done >= fam.n_trials)
    return left, spent


def _check_mix(spec: Any, mix: dict[str, float], trial_fn: Any) -> None:
    """Before anything runs: the output is a directory, every space of ``mix`` loads and
    its trainer (``trial_fn``, else ``training.trial_fn``) can train it; UserError else."""
    from hpsearch.core.remote import is_uri
    from hpsearch.search.trial import check_trainer_fits
    from search_spaces import SpaceError, load_space

    if is_uri(str(spec.output)):
        raise UserError(
            f"spec field 'output': a pipeline of several spaces writes its sibling runs into "
            f"a directory, got the URI {spec.output!r}. Fix: give a local or shared path."
        )
    for space in mix:
        try:
            family = load_space(space).family
        except SpaceError as exc:
            where = (
                "spec field 'spaces'"
                if spec.spaces is not None
                else "the pipeline's default mix (the spec names neither `space` nor `spaces`)"
            )
            raise UserError(f"{where}: {exc}") from None
        check_trainer_fits(trial_fn or spec.training.trial_fn, space, family)


def run_mix(
    spec: Any,
    mix: dict[str, float],
    *,
    resume: bool = False,
    address: str | None = None,
    n_trials: int | None = None,
    progress: bool = True,
    trial_fn: Any = None,
    trial_options: dict[str, Any] | None = None,
    stream: Any = None,
) -> tuple[list[Family], dict[str, Any], dict[str, Any], list[str]]:
    """Search every family of ``mix`` in its sibling run, one after another, each within
    its share of the budget; returns (the families, ``pipeline.json``'s content, the
    summaries by family, the reasons of families that stopped early).

    On ``resume`` a family whose share is spent is skipped, one that was interrupted (or
    stopped early) continues with the time it has left, the others start. A family that
    stops early (``StudyStopped``) is recorded and the next one starts; ``Interrupted``
    (Ctrl-C) is recorded and raised."""
    from hpsearch.search.driver import Interrupted, run_search

    out_stream = sys.stderr if stream is None else stream
    say = (lambda text: print(text, file=out_stream, flush=True)) if progress else (lambda _: None)
    _check_mix(spec, mix, trial_fn)
    families = plan_families(spec, mix, n_trials)
    out = Path(spec.output)
    state = _check_output(out, mix, resume) or _new_state(spec, mix, families)
    for fam in families:  # this spec's budget (a resume may change the total)
        rec = state["families"][fam.name]
        rec.update(family=fam.name, space=fam.space, timeout_s=fam.timeout_s, n_trials=fam.n_trials)
    total_s = default_budget(spec, n_trials).budget.timeout_s
    summaries: dict[str, Any] = {}
    stopped: list[str] = []
    n = len(families)
    for i, fam in enumerate(families, 1):
        rec = state["families"][fam.name]
        left, spent = _left(fam, rec)
        if spent:
            say(
                f"family {fam.name} ({i}/{n}): its share is spent ({rec['elapsed_s']:.0f} s, "
                f"{rec['n_complete']} complete); {_fmt_best(rec, spec.metric)}"
            )
            summaries[fam.name] = None
            continue
        how = f"{left:.0f} s" if left is not None else "no time limit"
        if left is not None and rec["state"] != "pending":
            how += f" left of {fam.timeout_s:.0f} s"
        elif total_s is not None:
            how += f" of {total_s:.0f} s"
        say(
            f"family {fam.name} ({i}/{n}): share {fam.share:.2f}, {how}, "
            f"up to {fam.n_trials} trials -> {fam.spec.output}"
        )
        budget = fam.spec.budget.model_copy(update={"timeout_s": left})
        sibling = fam.spec.model_copy(update={"budget": budget})
        ledger = _Ledger(out, state, fam.name, float(rec.get("elapsed_s") or 0.0))
        t0 = time.time()
        try:
            summary = run_search(
                sibling,
                resume=resume,
                address=address,
                n_trials=fam.n_trials,
                trial_fn=trial_fn,
                progress=progress,
                stream=stream,
                trial_options=trial_options,
                callbacks=[ledger],
                progress_prefix=_prefix(fam, i, n, state),
            )
        except Interrupted:
            rec["wall_s"] = round(float(rec.get("wall_s") or 0) + time.time() - t0, 3)
            rec["state"] = "interrupted"
            _write_state(out, state)
            raise
        except StudyStopped as exc:
            summary = None
            rec["state"] = "stopped"
            rec["stopped"] = str(exc)
            stopped.append(f"family {fam.name}: {exc}")
        else:
            rec["state"] = "done"
        rec["wall_s"] = round(float(rec.get("wall_s") or 0) + time.time() - t0, 3)
        if ledger.loop is not None or summary is not None:
            _write_state(out, state)
        summaries[fam.name] = summary
        counts = f"{rec['n_complete']} complete, {rec['n_failed']} failed, {rec['n_pruned']} pruned"
        say(
            f"family {fam.name} {rec['state']}: {_fmt_best(rec, spec.metric)}; {counts}; "
            f"{rec['elapsed_s']:.0f} s of search ({rec['wall_s']:.0f} s with set-up)"
        )
    return families, state, summaries, stopped


def _submit(spec: Any, ens: Any, out: Path) -> Path | None:
    """Check the ensemble's submission as the competition would and copy it to
    ``out/submission.csv``; None when the spec has no test set."""
    from ensembles.checks import check_submission_file
    from hpsearch.core import atomic

    ens_dir = Path(ens.out_dir)
    produced = ens_dir / "submission.csv"
    if not spec.data.test:
        return None
    if not produced.exists():
        raise UserError(
            f"the ensemble in {ens_dir} has no submission.csv although the spec has a test "
            "set. Fix: rebuild the ensemble (`ensembles build RUN_DIR`)."
        )
    layout = ens.info.get("submission", {}) or {}
    id_col = layout.get("id_column") or spec.data.id or "id"
    check_submission_file(
        str(produced),
        test=spec.data.test,
        sample=spec.data.sample_submission,
        id_col=id_col,
        task=spec.task,
        columns=layout.get("columns"),
        classes=ens.info.get("classes"),
        metric=spec.metric,
    )
    sub_path = out / "submission.csv"
    atomic.write_bytes(sub_path, produced.read_bytes())
    return sub_path


def run_pipeline(
    spec: Any,
    *,
    resume: bool = False,
    address: str | None = None,
    n_trials: int | None = None,
    progress: bool = True,
    trial_fn: Any = None,
    trial_options: dict[str, Any] | None = None,
    ensemble_name: str | None = None,
    stream: Any = None,
    folds: int | None = None,
) -> PipelineResult:
    """Search, ensemble, check and write the submission for ``spec``. The split is the
    one :func:`pipeline_spec` decides: ``folds`` (0: the train/valid/holdout split), the
    spec's, the resumed run's, else :data:`DEFAULT_FOLDS`-fold cross-validation, whose
    ensemble is fitted on out-of-fold predictions.

    With several spaces (``spaces``, or :data:`DEFAULT_MIX` when the spec names neither
    ``space`` nor ``spaces``) each is searched in its sibling run ``OUTPUT/<space>/``
    within its share of the budget (:func:`run_mix`), and the ensemble
    (``OUTPUT/ensembles/<name>/``) blends them all. A spec that sets no budget gets
    :data:`DEFAULT_TIMEOUT_S` seconds of search (:func:`default_budget`)."""
    from ensembles.builder import build_ensemble
    from hpsearch.search.driver import run_search

    out = sys.stderr if stream is None else stream
    spec = pipeline_spec(spec, folds, resume)
    mix = pipeline_mix(spec)
    if progress:
        k = spec.split.folds
        how = f"{k}-fold cross-validation" if k else "the train/valid/holdout split"
        if mix is not None:
            how += f"; {len(mix)} families: {_spaces_text(mix)}"
        print(f"pipeline: {how}", file=out)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = ensemble_name or f"pipeline-{stamp}"
    if mix is not None:
        return _run_pipeline_mix(
            spec,
            mix,
            name,
            resume=resume,
            address=address,
            n_trials=n_trials,
            progress=progress,
            trial_fn=trial_fn,
            trial_options=trial_options,
            stream=stream,
        )
    if (Path(spec.output) / PIPELINE_JSON).is_file():
        raise RunDirError(
            f"output {spec.output} holds a pipeline of several spaces ({PIPELINE_JSON}), and "
            f"the spec names one `space`. Fix: restore the spec's `spaces` to continue it, or "
            "set `output` to a new directory."
        )
    spec = default_budget(spec, n_trials)
    summary = run_search(
        spec,
        resume=resume,
        address=address,
        n_trials=n_trials,
        trial_fn=trial_fn,
        progress=progress,
        stream=stream,
        trial_options=trial_options,
    )
    if progress:
        print(
            f"search: {summary.n_complete} complete, {summary.n_failed} failed, "
            f"{summary.n_pruned} pruned in {summary.elapsed_s:.0f} s; best trial "
            f"{summary.best_number} {spec.metric} {summary.best_value:.4f}",
            file=out,
        )
    ens = build_ensemble([spec.output], name=name, progress=progress)
    ens_dir = Path(ens.out_dir)
    sub_path = _submit(spec, ens, Path(spec.output))
    report = ens_dir / "report.md"
    return PipelineResult(
        run_dir=Path(spec.output),
        ensemble_dir=ens_dir,
        submission=sub_path,
        report=report if report.exists() else None,
        search=summary,
        ensemble=ens,
    )


def _run_pipeline_mix(
    spec: Any, mix: dict[str, float], name: str, **options: Any
) -> PipelineResult:
    """The pipeline of several families: :func:`run_mix`, then one ensemble of every
    sibling run with a complete trial, and its checked submission."""
    from ensembles.builder import build_ensemble

    progress = options["progress"]
    stream = sys.stderr if options["stream"] is None else options["stream"]
    families, state, summaries, stopped = run_mix(spec, mix, **options)
    out = Path(spec.output)
    runs = [Path(f.spec.output) for f in families if state["families"][f.name]["n_complete"]]
    if not runs:
        raise StudyStopped(
            "no family of the pipeline has a complete trial: "
            + "; ".join(stopped or ["every family's share was spent without one"])
        )
    if progress:
        names = ", ".join(p.name for p in runs)
        print(f"ensemble: the candidates of {len(runs)} families ({names})", file=stream)
    ens = build_ensemble(runs, out=out / "ensembles" / name, progress=progress)
    ens_dir = Path(ens.out_dir)
    sub_path = _submit(families[0].spec, ens, out)
    state["ensemble"] = str(ens_dir.relative_to(out))
    state["submission"] = None if sub_path is None else sub_path.name
    _write_state(out, state)
    report = ens_dir / "report.md"
    return PipelineResult(
        run_dir=out,
        ensemble_dir=ens_dir,
        submission=sub_path,
        report=report if report.exists() else None,
        search=summaries,
        ensemble=ens,
        families=[state["families"][f.name] for f in families],
        runs=runs,
        stopped=stopped,
    )
