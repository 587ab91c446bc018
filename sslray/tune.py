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
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else <experiment>/mlflow.db)")
    ap.add_argument("--registered-model", help="register the best encoder under this name (default: sslray-<name>)")
    ap.add_argument("--num-cpus", type=float, help="logical CPUs of a local Ray (default: the machine's cores)")
    args = ap.parse_args(argv)

    from sslray.config import ConfigError
    from sslray.data import DataError
    from sslray.search.space import load_search_space

    name = args.name or Path(args.search_space).stem
    try:
        space = load_search_space(args.search_space)
        space.trial_config({p.path: (p.values[0] if p.dist == "choice" else p.low) for p in space.params},
                           args.overrides)  # overrides checked before anything starts
        exp = Path(args.output) / name
        if (exp / "tune").exists() and not args.resume:
            raise ConfigError(f"--name: {exp} already holds a search; pass --resume to continue it or choose another --name")
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from sslray.search.run import run_search

    summary = run_search(space, args.output, name, resume=args.resume, overrides=args.overrides,
                         tracking_uri=args.tracking_uri, registered_model=args.registered_model or f"sslray-{name}",
                         address=args.address, num_cpus=args.num_cpus)
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
