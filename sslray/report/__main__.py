"""``python -m sslray.report EXPERIMENT [--no-eval] [--tracking-uri URI]``: a report you can open anywhere.

EXPERIMENT is a search folder (``python -m sslray.tune``; finished, interrupted or still running)
or a comparison folder (``python -m sslray.compare``, with compare.json). The report is Markdown with
PNG figures in ``EXPERIMENT/report/`` (report.md, figures/), also logged as the artifacts
``report/`` of the MLflow parent run. A search report holds: the search's header and the command
that regenerates it, the trial table (numbers from MLflow), learning curves, parameter importance
(final score and ASHA's first rung, with a warning when there are too few trials), a collapse map
with each trial's RankMe, and the best trial against the untrained encoder on the full test set
(cached in report/eval.json; ``--no-eval`` skips it and the report says so). A comparison report
holds each arm's scores with intervals, their differences and tests, and links each arm's search
report, rendered too. Bad input (no such folder, not a search or comparison): one line, exit 2,
nothing written.
"""
from __future__ import annotations

import sys
from pathlib import Path

from sslray.cli import ArgumentParser, fail


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m sslray.report", description=__doc__.split("\n")[0])
    ap.add_argument("experiment", metavar="EXPERIMENT", help="a search folder (python -m sslray.tune) or a comparison folder "
                                       "(python -m sslray.compare)")
    ap.add_argument("--no-eval", action="store_true",
                    help="skip evaluating the best trial against the untrained encoder (the report says it was skipped)")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI the search logged to (default: EXPERIMENT/mlflow.db, "
                                           "else $MLFLOW_TRACKING_URI)")
    ap.add_argument("--copy-to", metavar="DIR", help="also copy the report folder(s) there, keeping their relative "
                                                     "places (a comparison's arm reports under DIR/arms/<arm>/), e.g. "
                                                     "to commit them under docs/")
    args = ap.parse_args(argv)

    from sslray.config import ConfigError
    from sslray.report.collect import is_compare, is_search

    folder = Path(args.experiment)
    if not folder.is_dir():
        return fail(f"EXPERIMENT: {folder} is not a folder; allowed: a search folder (python -m sslray.tune: "
                    "--output/--name) or a comparison folder (python -m sslray.compare)")
    if not (is_compare(folder) or is_search(folder)):
        return fail(f"EXPERIMENT: {folder} is neither a search nor a comparison folder; allowed: a folder with "
                    "summary.json or optuna.db (python -m sslray.tune) or with compare.json (python -m sslray.compare)")
    try:
        if is_compare(folder):
            from sslray.report.compare import write_compare_report

            report, notes = write_compare_report(folder, args.no_eval, args.tracking_uri)
        else:
            from sslray.report.markdown import write_search_report

            report, note = write_search_report(folder, args.no_eval, args.tracking_uri)
            notes = [note]
    except ConfigError as e:
        return fail(str(e))
    print(f"report: {report}")
    for note in notes:
        print(note)
    if args.copy_to:
        for copied in copy_reports(folder, Path(args.copy_to)):
            print(f"copied: {copied}")
    return 0


def copy_reports(folder: Path, dest: Path) -> list[Path]:
    """Every ``report/`` folder under ``folder`` (its own, its arms'), copied to the same relative
    place under ``dest``, so the links between them still resolve."""
    import shutil

    copied = []
    own = [folder.absolute() / "report" / "report.md", *sorted(folder.absolute().glob("arms/*/report/report.md"))]
    for report in [r for r in own if r.is_file()]:  # not the copies MLflow keeps in mlartifacts/
        rel = report.parent.relative_to(folder.absolute())
        target = dest / rel
        if target.exists():
            shutil.rmtree(target)  # no stale figures from an earlier copy
        shutil.copytree(report.parent, target)
        copied.append(target / "report.md")
    return copied


if __name__ == "__main__":
    sys.exit(main())
