"""``python -m sslray.tune SEARCH_SPACE.yaml [key.sub=value ...]``: the search.

Optuna TPE proposes loss weights (and lr, ...), each trial pretrains through Ray Train and reports
kNN / probe / RankMe every epoch, ASHA stops the weak ones at its rungs, collapsed or diverged
trials are stopped and recorded, and MLflow holds one parent run for the search and one nested
run per trial. The best trial's encoder is logged as an MLflow PyTorch model and registered.
``--resume`` continues an interrupted search: no finished trial runs again, no MLflow duplicates.
Overrides apply to every trial's config, e.g. ``data.root=/data``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sslray.tune", description=__doc__.split("\n")[0])
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
    ap.add_argument("--plan", action="store_true",
                    help="print ASHA's rungs and the trial-epochs / GPU-hours the search will spend; run nothing")
    ap.add_argument("--epoch-seconds", type=float,
                    help="with --plan: seconds one trial-epoch takes (training + evaluation), for GPU-hours")
    args = ap.parse_intermixed_args(argv)  # overrides may follow options
    if args.epoch_seconds is not None and not (args.plan and args.epoch_seconds > 0):
        ap.error("--epoch-seconds: allowed only with --plan, and > 0")

    from sslray.config import ConfigError
    from sslray.data import DataError
    from sslray.search.space import load_search_space

    name = args.name or Path(args.search_space).stem
    try:
        space = load_search_space(args.search_space)
        space.trial_config({p.path: (p.values[0] if p.dist == "choice" else p.low) for p in space.params},
                           args.overrides)  # overrides checked before anything starts
        if args.plan:
            from sslray.search.plan import budget, format_budget

            space.base = space.trial_config({}, args.overrides).to_dict()  # e.g. train.epochs=50
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
        if exists and not args.resume:
            raise ConfigError(f"--name: {ray_storage(args.output, name, args.storage)} already holds a search; "
                              "pass --resume to continue it or choose another --name")
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from sslray.search.run import run_search

    summary = run_search(space, args.output, name, resume=args.resume, overrides=args.overrides,
                         tracking_uri=args.tracking_uri, registered_model=args.registered_model or f"sslray-{name}",
                         address=args.address, num_cpus=args.num_cpus, storage=args.storage)
    best = summary["best"]
    print(f"\n{summary['trials']} trials in {summary['wall_time_s']:.0f} s: " +
          ", ".join(f"{n} {k}" for k, n in sorted(summary["outcomes"].items())))
    if best:
        print(f"best {summary['metric']} = {best[summary['metric']]:.4f} (trial {best['trial_id']}, epoch {best['epochs']})")
        print(f"  params: {json.dumps(best['params'])}")
        print(f"  checkpoint: {best['checkpoint']}\n  MLflow run: {best['mlflow_run_id']}  model: {best.get('model_uri')}")
    print(f"summary: {Path(summary['experiment']) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
