"""A search's report: ``EXPERIMENT/report/report.md`` + ``figures/*.png`` (+ ``trials.csv``, ``eval.json``),
logged as the artifacts ``report/`` of the search's MLflow parent run. Plain Markdown with relative
image links: it opens in any viewer, no server needed."""
from __future__ import annotations

import csv
import datetime
import shlex
from pathlib import Path
from typing import Any

from sslray.report import figures
from sslray.report.collect import Search, load_search
from sslray.report.evaluate import best_vs_untrained
from sslray.report.importance import importances
from sslray.tracking import tags


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def num(v: Any, digits: int = 4) -> str:
    """How every score appears in a report (the test compares these strings with MLflow's values)."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def param(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def command(folder: Path, no_eval: bool, tracking_uri: str | None) -> str:
    args = ["python", "-m", "sslray.report", str(folder)] + (["--no-eval"] if no_eval else [])
    return shlex.join(args + (["--tracking-uri", tracking_uri] if tracking_uri else []))


def write_search_report(folder: str | Path, no_eval: bool = False, tracking_uri: str | None = None,
                        fallback_uri: str | None = None) -> tuple[Path, str]:
    """Write ``folder/report/`` and log it to the parent run; (report.md, what happened to MLflow)."""
    search = load_search(folder, tracking_uri, fallback_uri)  # raises ConfigError before anything is written
    out = search.folder / "report"
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # a figure of an earlier report that this one may not draw
        old.unlink()
    specs = search.params
    md = [header(search, command(search.folder, no_eval, tracking_uri))]
    md += trials_section(search, out)
    md += lineage_section(search)
    md += curves_section(search, fig_dir)
    md += importance_section(search, fig_dir)
    md += collapse_section(search, specs, fig_dir)
    md += eval_section(best_vs_untrained(search, out, no_eval), search.metric)
    report = out / "report.md"
    report.write_text("\n\n".join(md) + "\n")
    return report, log_report(search.tracking_uri, search.parent_run_id, out)


def log_report(tracking_uri: str, run_id: str, out: Path) -> str:
    """Log the report folder as the run's artifacts ``report/``; a line saying what happened."""
    from sslray.tracking import Tracker, TrackingError

    try:
        Tracker(tracking_uri).log_folder(run_id, out, "report")
    except TrackingError as e:  # the report on disk stands on its own
        return f"not logged to MLflow run {run_id} ({str(e)[:300]})"
    return f"logged to MLflow run {run_id} as report/ ({tracking_uri})"


def header(s: Search, cmd: str) -> str:
    counts = s.outcome_counts()
    summary_wall = (s.summary or {}).get("wall_time_s")
    wall = duration(s.wall_s) + (" so far" if s.status == "running" else "") + " (MLflow parent run, start to end)"
    if summary_wall is not None:
        wall += f"; {duration(summary_wall)} in the search driver's last run (summary.json)"
    status = s.status + {"running": " (no summary.json yet; a driver killed with SIGKILL looks the same)",
                         "interrupted": ": continue it with python -m sslray.tune ... --resume"}.get(s.status, "")
    rows = [["search", f"`{s.name}` ({s.folder})"],
            ["space file", f"`{s.space_file}`" + (f", overrides `{s.overrides}`" if s.overrides else "")],
            ["searched", ", ".join(f"`{p['path']}` ({p['dist']})" for p in s.params)],
            ["metric", f"`{s.metric}` ({s.mode}imise), up to {s.max_epochs} epochs"],
            ["scheduler", s.scheduler.describe()],
            ["trials", f"{len(s.trials)} of {s.space['num_trials']}"],
            ["outcomes", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"],
            ["wall time", wall], ["status", status],
            ["MLflow", f"parent run `{s.parent_run_id}` in `{s.tracking_uri}`"],
            ["written", datetime.datetime.now().astimezone().isoformat(timespec="seconds")]]
    best = (s.summary or {}).get("best")
    if best:
        rows.insert(7, ["best trial", f"`{best['trial_id']}`: {s.metric} {num(best[s.metric])} at epoch "
                                      f"{best['epochs']}, " + ", ".join(f"`{k}`={param(v)}" for k, v in
                                                                        best["params"].items())])
    return "\n\n".join([f"# Search report: {s.name}", table(["", ""], rows),
                        f"Regenerate with:\n\n    {cmd}"])


def trials_section(s: Search, out: Path) -> list[str]:
    paths = [p["path"] for p in s.params]
    header_ = paths + ["outcome", "epochs", f"best {s.metric}", f"last {s.metric}", "final RankMe", "MLflow run"]
    rows = [[param(t.params.get(p)) for p in paths] + [t.outcome, num(t.epochs), num(t.best), num(t.last),
                                                       num(t.rankme, 2), f"`{t.run_id}`"] for t in s.trials]
    with open(out / "trials.csv", "w", newline="") as f:  # the same table, full precision
        w = csv.writer(f)
        w.writerow(["trial_id", *paths, "outcome", "reason", "epochs", "best", "last", "rankme", "mlflow_run_id"])
        for t in s.trials:
            w.writerow([t.trial_id, *[t.params.get(p, "") for p in paths], t.outcome, t.reason, t.epochs, t.best,
                        t.last, t.rankme, t.run_id])
    reasons = sorted({f"{t.outcome}: {t.reason}" for t in s.trials if t.outcome in ("collapsed", "diverged", "failed")})
    text = [f"## Trials\n\nFrom the MLflow child runs, in start order (full precision in `trials.csv`). "
            f"*best* is the best {s.metric} over a trial's epochs, *last* its score at its last epoch. "
            f"Outcomes: finished = ran every epoch, {s.scheduler.name} = stopped by {s.scheduler.label} "
            "(asha: at a rung), collapsed / diverged = stopped by the "
            "collapse or non-finite-loss check, failed = raised.", table(header_, rows)]
    if reasons:
        text.append("Why trials stopped early:\n\n" + "\n".join(f"- {r}" for r in reasons))
    return text


def lineage_section(s: Search) -> list[str]:
    """PBT: which trial went on from which trial's checkpoint, at which epoch, with which values
    (from the Optuna study's segments; the scheduler plug-in reads them)."""
    try:
        rows = s.scheduler.inheritance(s.folder, s.name)
    except Exception as e:  # no study yet (a search killed before it asked its population)
        return [f"## Inheritance\n\nThe Optuna study could not be read ({type(e).__name__})."]
    if not rows:
        return []
    paths = [p["path"] for p in s.params]
    return ["## Inheritance", f"{len(rows)} exploits: at each, a trial went on from another trial's checkpoint "
            "with that trial's values perturbed. Its MLflow run keeps its first values as params and each later "
            f"segment as the tag `{tags.SEGMENT_PREFIX}<epoch>`; the Optuna study holds one trial per segment.",
            table(["trial", "went on from", "at epoch", *paths, "Optuna trial", "segment outcome"],
                  [[f"`{r['trial']}`", f"`{r['parent']}`", str(r["from_epoch"]),
                    *[param(r["values"].get(p)) for p in paths], str(r["optuna_trial"]), r["outcome"] or "running"]
                   for r in rows])]


def curves_section(s: Search, fig_dir: Path) -> list[str]:
    from sslray.search.plan import WHAT, rungs

    if not any(t.curve for t in s.trials):
        return ["## Learning curves\n\nNo trial has logged a score yet."]
    figures.learning_curves(s.trials, s.metric, rungs(s.search_space()), fig_dir / "curves.png",
                            f"{s.scheduler.label} {WHAT.get(s.scheduler.name, 'milestones')}")
    return ["## Learning curves", "![learning curves](figures/curves.png)"]


def importance_section(s: Search, fig_dir: Path) -> list[str]:
    paths = [p["path"] for p in s.params]
    text = ["## Parameter importance", "From the search's Optuna study (`optuna.db`), with Optuna's PED-ANOVA "
            "(its default) and fANOVA. Optuna counts COMPLETE trials only, and ASHA prunes most trials, so the "
            "importance is given twice: for the final score (trials that ran to the end) and for the score at "
            "ASHA's first rung (every trial that got there: what ASHA selected on). They answer different "
            "questions."]
    for imp in importances(s.folder, s.name, s.grace_period, s.max_epochs, paths):
        text.append(f"### {imp.title}")
        if imp.missing:
            text.append(f"No importance: {imp.missing}.")
            continue
        if imp.warning:
            text.append(f"**Warning: {imp.warning}**")
        names = list(imp.ped_anova)
        text.append(f"{imp.n_trials} trials used.\n\n" + table(
            ["parameter", "PED-ANOVA", "fANOVA"], [[f"`{n}`", num(imp.ped_anova[n], 3), num(imp.fanova.get(n), 3)]
                                                   for n in names]))
        name = f"importance_{imp.key}.png"
        figures.importance_plot(imp.study, "PED-ANOVA", imp.title.split(" (")[0], s.metric, fig_dir / name)
        text.append(f"![importance: {imp.title}](figures/{name})")
    return text


def collapse_section(s: Search, specs: list[dict[str, Any]], fig_dir: Path) -> list[str]:
    if not s.trials:
        return ["## Collapse map\n\nNo trial has started yet."]
    figures.collapse_map(s.trials, specs, s.metric, fig_dir / "collapse_map.png")
    figures.rankme_panels(s.trials, specs, s.space["stop"].get("rankme_below"), fig_dir / "rankme.png")
    pairs = "each pair of searched parameters" if len(specs) > 1 else f"`{specs[0]['path']}` against the best score"
    return ["## Collapse map", f"Every trial placed by {pairs} (log axes for loguniform parameters, categories as "
            "positions); marker = outcome, colour = best score. Beside it, each parameter against the trial's "
            "final RankMe (effective rank of its embeddings: low means collapsed).",
            "![collapse map](figures/collapse_map.png)", "![final RankMe](figures/rankme.png)"]


def eval_section(ev: dict[str, Any], metric: str) -> list[str]:
    title = "## Best trial vs the untrained encoder"
    if "skipped" in ev:
        return [title, f"Not evaluated: {ev['skipped']}."]
    b, u = ev["best"], ev["untrained"]
    rows = [["kNN top-1", num(b["knn_top1"]), num(u["knn_top1"])],
            ["linear probe top-1 (test)", num(b["probe_test_top1"]), num(u["probe_test_top1"])],
            ["linear probe top-1 (train)", num(b["probe_train_top1"]), num(u["probe_train_top1"])],
            ["RankMe (embeddings)", num(b["rankme"], 2), num(u["rankme"], 2)],
            ["test / train images", f"{b['test_images']} / {b['train_images']}",
             f"{u['test_images']} / {u['train_images']}"]]
    where = "from `report/eval.json` (cached: the best trial has not changed)" if ev.get("cached") else \
        "computed now, cached in `report/eval.json`"
    return [title, f"Both evaluated with `sslray.eval` on the full test set (`{' '.join(ev['key']['overrides'])}`), "
            f"{where}: the best trial's checkpoint `{ev['key']['checkpoint']}` (epoch {b.get('epoch')}) and the same "
            "config untrained (`report/untrained_config.yaml`).",
            table(["", f"best trial `{ev['key']['trial_id']}`", "untrained"], rows)]

