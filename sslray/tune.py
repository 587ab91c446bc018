"""``python -m sslray.tune SEARCH_SPACE.yaml [key.sub=value ...]``: the search.

Optuna TPE proposes loss weights (and lr, ...), each trial pretrains (in the trial itself with one
worker, through Ray Train with more) and reports kNN / probe / RankMe every epoch, the scheduler
(``search.scheduler``: fifo, asha -- the default, stopping the weak at its rungs -- or pbt) acts,
collapsed or diverged trials are stopped and recorded, and MLflow holds one
parent run for the search and one nested run per trial. It prints one line per trial-epoch and
trial end; Ray's own messages go to <experiment>/ray.log (``-v``: also to the terminal). The best trial's encoder is logged as an MLflow PyTorch model and registered.
``--resume`` continues an interrupted search: no finished trial runs again, no MLflow duplicates.
Overrides apply to every trial's config, e.g. ``data.root=/data``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from sslray.cli import ArgumentParser
from sslray.config import absolute_overrides


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m sslray.tune", description=__doc__.split("\n")[0])
    ap.add_argument("search_space", help="a search-space YAML (see search_spaces/)")
    ap.add_argument("overrides", nargs="*", help="key.sub=value applied to every trial, e.g. data.root=/data")
    ap.add_argument("--name", help="experiment name (default: the file's stem)")
    ap.add_argument("--output", default="experiments", help="experiments folder (default: ./experiments)")
    ap.add_argument("--resume", action="store_true", help="continue the experiment of the same name")
    ap.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--storage", help="where Tune state and trial checkpoints go: a path or pyarrow URI "
                                      "(s3://, gs://, an NFS path) every node reaches; needed on a multi-node "
                                      "cluster (default: the experiment folder)")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else <experiment>/mlflow.db)")
    ap.add_argument("--registered-model", help="register the best encoder under this name (default: sslray-<name>)")
    ap.add_argument("--num-cpus", type=float, help="logical CPUs of a local Ray (default: the machine's cores + 1 for the trials' driver actors)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="show Ray's and Tune's own messages on the terminal too (always in <experiment>/ray.log)")
    ap.add_argument("--plan", action="store_true",
                    help="print the scheduler's milestones (ASHA's rungs) and the trial-epochs / GPU-hours the search will spend; run nothing")
    ap.add_argument("--epoch-seconds", type=float,
                    help="with --plan: seconds one trial-epoch takes (training + evaluation), for GPU-hours")
    args = ap.parse_intermixed_args(argv)  # overrides may follow options

    from sslray.config import ConfigError
    from sslray.data import DataError
    from sslray.search.checks import check_data_here, check_experiment
    from sslray.search.space import load_search_space

    name = args.name or Path(args.search_space).stem
    try:
        check_experiment(name, args.output, args.num_cpus, args.plan, args.epoch_seconds)
        space = load_search_space(args.search_space, absolute_overrides(args.overrides))  # resolved once
        if args.plan:
            from sslray.search.plan import budget, format_budget

            print(format_budget(budget(space, args.epoch_seconds)))
            return 0
        from sslray.search.run import ray_storage, search_exists

        try:
            exists = search_exists(args.output, name, args.storage)
        except Exception as e:  # unknown scheme, unreachable bucket, missing credentials library
            if not args.storage:
                raise
            raise ConfigError(f"--storage: {args.storage} is not usable ({e}); allowed: a path, "
                              "file://, s3://, gs://, hdfs:// ...") from None
        where = ray_storage(args.output, name, args.storage)
        if exists and not args.resume:
            raise ConfigError(f"--name: {where} already holds a search; allowed: --resume to continue it, "
                              "or another --name")
        if args.resume and not exists:
            raise ConfigError(f"--resume: {where} holds no search to resume; allowed: the --output, --name "
                              "(and --storage) of an earlier search, or no --resume to start one")
        check_data_here(space.base, args.address)  # after the cheap checks: it may download the dataset
        from sslray.search.run import run_search

        from sslray.search.plan import rungs

        where_log = Path(args.output).absolute() / name / "ray.log"
        acts = ("FIFO: no early stopping" if space.scheduler.name == "fifo" else
                f"{space.scheduler.label} acts at epochs {', '.join(map(str, rungs(space))) or 'none'}")
        print(f"{name}: {space.num_trials} trials, {space.max_concurrent} at a time, up to {space.max_epochs} epochs "
              f"each; {acts}; Ray's log: {where_log}", flush=True)
        summary = run_search(space, args.output, name, resume=args.resume, verbose=args.verbose,
                             tracking_uri=args.tracking_uri,
                             registered_model=args.registered_model or f"sslray-{name}", address=args.address,
                             num_cpus=args.num_cpus, storage=args.storage)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary["status"] == "interrupted":
        print(f"\nsearch interrupted after {summary['wall_time_s']:.0f} s: {summary['trials_ended']} of "
              f"{summary['trials']} trials ended; the runs still going are marked KILLED in MLflow.\n"
              f"continue it with the same command and --resume", file=sys.stderr)
        return 128 + (summary["signal"] or 2)  # 130 for Ctrl-C, 143 for SIGTERM
    best = summary["best"]
    print(f"\n{summary['trials']} trials in {summary['wall_time_s']:.0f} s: " +
          ", ".join(f"{n} {k}" for k, n in sorted(summary["outcomes"].items())))
    if best:
        print(f"best {summary['metric']} = {best[summary['metric']]:.4f} (trial {best['trial_id']}, epoch {best['epochs']})")
        print(f"  params: {json.dumps(best['params'])}")
        print(f"  checkpoint: {best['checkpoint']}\n  MLflow run: {best['mlflow_run_id']}  model: {best.get('model_uri')}")
    print(f"summary: {Path(summary['experiment']) / 'summary.json'}")
    if not best:  # every trial failed or diverged: recorded in summary.json and MLflow, and not a success
        print(f"error: no trial of {summary['trials']} produced a finite {summary['metric']} and a checkpoint "
              f"({', '.join(f'{n} {k}' for k, n in sorted(summary['outcomes'].items()))}); see summary.json and "
              "the trials' MLflow runs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
