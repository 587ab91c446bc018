"""The report of a comparison folder (``python -m sslray.compare``: compare.json).

``DIR/report/report.md``: the answer (each arm's final scores over seeds, mean and 95 % interval),
the differences between arms with their tests, every seed's score in one figure, what each arm's
search cost and how often it collapsed, the parameters it chose, and the machine and versions it
ran on. Each arm's search report is rendered too (``<search_dir>/report``) and linked. Logged to the
comparison's MLflow parent run when its store is ``DIR/mlflow.db`` (or --tracking-uri) and holds it.
Every number is compare.json's, printed as it stands (4 decimals).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sslray.config import ConfigError
from sslray.report import figures
from sslray.report.collect import is_search
from sslray.report.markdown import command, duration, log_report, num, param, table

REQUIRED = ("name", "status", "arms", "metrics")


def load_compare(folder: Path) -> dict[str, Any]:
    try:
        doc = json.loads((folder / "compare.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"EXPERIMENT: {folder / 'compare.json'} is not readable JSON ({e}); allowed: the "
                          "compare.json written by python -m sslray.compare") from None
    missing = [k for k in REQUIRED if k not in (doc if isinstance(doc, dict) else {})]
    if missing or doc.get("kind", "compare") != "compare":
        raise ConfigError(f"EXPERIMENT: {folder / 'compare.json'} lacks {', '.join(missing) or 'kind: compare'}; "
                          "allowed: the compare.json written by python -m sslray.compare")
    return doc


def write_compare_report(folder: str | Path, no_eval: bool = False,
                         tracking_uri: str | None = None) -> tuple[Path, list[str]]:
    """Write ``folder/report/`` (and every arm's search report); (report.md, notes for the terminal)."""
    folder = Path(folder).absolute()
    doc = load_compare(folder)  # raises ConfigError before anything is written
    own_uri = tracking_uri or (f"sqlite:///{folder / 'mlflow.db'}" if (folder / "mlflow.db").is_file() else None)
    out = folder / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    notes, arm_links, rendered = [], {}, {}
    for arm in doc["arms"]:
        key = str(Path(arm.get("search_dir") or "").absolute())
        if key not in rendered:  # arms may share a search (the same space, other finals)
            rendered[key] = _arm_report(arm, out, no_eval, own_uri)
            notes.append(f"arm {arm['name']}: {rendered[key][1]}")
        arm_links[arm["name"]] = rendered[key][0]
    metrics = doc["metrics"]
    md = [_header(doc, folder, command(folder, no_eval, tracking_uri)), _answer(doc, metrics),
          _differences(doc), _scores_figure(doc, metrics, out), _costs(doc, arm_links), _best_params(doc),
          _environment(doc)]
    report = out / "report.md"
    report.write_text("\n\n".join(md) + "\n")
    notes.append(_log(own_uri, doc.get("mlflow_parent_run_id"), out))
    return report, notes


def _arm_report(arm: dict, out: Path, no_eval: bool, fallback_uri: str | None) -> tuple[str | None, str]:
    """Render an arm's search report; (its link relative to out, a note)."""
    from sslray.report.markdown import write_search_report

    search_dir = Path(arm.get("search_dir") or "")
    if not arm.get("search_dir") or not search_dir.is_dir() or not is_search(search_dir):
        return None, f"no search folder at {arm.get('search_dir')!r}: its search report is not rendered"
    try:
        report, logged = write_search_report(search_dir, no_eval, None, fallback_uri)
    except ConfigError as e:
        return None, f"search report not rendered ({e})"
    return os.path.relpath(report, out), f"search report {report}; {logged}"


def _log(uri: str | None, run_id: str | None, out: Path) -> str:
    if not uri or not run_id:
        return ("not logged to MLflow: " + ("compare.json names no parent run" if not run_id else
                                             "no mlflow.db in the folder and no --tracking-uri"))
    from sslray.tracking import Tracker

    if Tracker(uri).get_run(run_id) is None:
        return f"not logged to MLflow: run {run_id} is not in {uri}"
    return log_report(uri, run_id, out)


def _header(doc: dict, folder: Path, cmd: str) -> str:
    b = doc.get("budget") or {}
    rows = [["comparison", f"`{doc['name']}` ({folder})"], ["status", doc["status"]],
            ["command", f"`{doc.get('command', '–')}`"],
            ["budget per arm", f"{b.get('trials', '–')} trials, {b.get('epochs', '–')} epochs each, "
                               f"{b.get('trial_epochs', '–')} trial-epochs"],
            ["seeds", ", ".join(map(str, doc.get("seeds", []))) or "–"],
            ["metrics", ", ".join(f"`{m}`" for m in doc["metrics"])],
            ["wall time", duration(doc.get("wall_time_s"))],
            ["MLflow parent run", f"`{doc.get('mlflow_parent_run_id', '–')}`"]]
    return "\n\n".join([f"# Comparison report: {doc['name']}", table(["", ""], rows), f"Regenerate with:\n\n    {cmd}"])


def _answer(doc: dict, metrics: list[str]) -> str:
    rows = []
    for arm in doc["arms"]:
        for m in metrics:
            s = (arm.get("summary") or {}).get(m) or {}
            rows.append([arm["name"], m, num(s.get("mean")), f"[{num(s.get('ci_low'))}, {num(s.get('ci_high'))}]",
                         s.get("method", "–"), s.get("n", "–")])
    return ("## Answer\n\nEach arm's best parameters retrained with every seed; mean final score and its 95 % "
            "interval (t: Student t over seeds; bootstrap: percentile bootstrap).\n\n" +
            table(["arm", "metric", "mean", "95 % interval", "method", "n"], rows))


def _differences(doc: dict) -> str:
    diffs = doc.get("differences") or []
    if not diffs:
        return "## Differences\n\nNone recorded (fewer than two arms, or the comparison has not finished)."
    rows = [[f"{d['a']} − {d['b']}", d["metric"], num(d.get("diff")), f"[{num(d.get('ci_low'))}, {num(d.get('ci_high'))}]",
             d.get("ci_method", "–"), num(d.get("welch_p")), num(d.get("permutation_p"))] for d in diffs]
    return ("## Differences\n\nMean of arm a minus mean of arm b, its 95 % interval, Welch's t-test and a "
            "permutation test over the seeds (two-sided p).\n\n" +
            table(["a − b", "metric", "difference", "95 % interval", "interval method", "Welch p", "permutation p"],
                  rows))


def _scores_figure(doc: dict, metrics: list[str], out: Path) -> str:
    if not any(arm.get("finals") for arm in doc["arms"]):
        return "## Scores per seed\n\nNo final run has finished yet."
    figures.compare_scores(doc["arms"], metrics, out / "figures" / "scores.png")
    rows = [[arm["name"], f.get("seed"), *[num(f.get(m)) for m in metrics], duration(f.get("wall_s")),
             f"`{f.get('mlflow_run_id', '–')}`"] for arm in doc["arms"] for f in arm.get("finals", [])]
    return "\n\n".join(["## Scores per seed", "![every seed's score per arm](figures/scores.png)",
                        table(["arm", "seed", *metrics, "wall time", "MLflow run"], rows)])


def _costs(doc: dict, links: dict[str, str | None]) -> str:
    rows = []
    for arm in doc["arms"]:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted((arm.get("outcomes") or {}).items())) or "–"
        link = f"[report]({links[arm['name']]})" if links.get(arm["name"]) else "not rendered"
        rows.append([arm["name"], f"`{arm.get('space', '–')}`", outcomes, num(arm.get("collapse_rate"), 3),
                     duration(arm.get("search_wall_s")), arm.get("search_trial_epochs", "–"),
                     duration(arm.get("finals_wall_s")), link])
    return ("## What each arm's search cost\n\nCollapse rate as `python -m sslray.compare` recorded it from the "
            "arm's search outcomes.\n\n" + table(["arm", "space", "search outcomes", "collapse rate", "search wall time",
                                                  "search trial-epochs", "finals wall time", "search report"], rows))


def _best_params(doc: dict) -> str:
    paths = sorted({p for arm in doc["arms"] for p in (arm.get("best_params") or {})})
    if not paths:
        return "## Best parameters per arm\n\nNone recorded."
    rows = [[f"`{p}`", *[param((arm.get("best_params") or {}).get(p)) for arm in doc["arms"]]] for p in paths]
    return "## Best parameters per arm\n\n" + table(["parameter", *[a["name"] for a in doc["arms"]]], rows)


def _environment(doc: dict) -> str:
    def flat(d: Any) -> list[list[str]]:
        return [[f"`{k}`", json.dumps(v) if isinstance(v, (dict, list)) else str(v)] for k, v in (d or {}).items()]

    return "\n\n".join(["## Machine and versions", table(["machine", ""], flat(doc.get("machine")) or [["–", "–"]]),
                        table(["package", "version"], flat(doc.get("versions")) or [["–", "–"]])])
