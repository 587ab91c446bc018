"""``python -m sslray.train CONFIG.yaml [key.sub=value ...] [--workers N] [--address ADDR]``

One pretraining run. With ``scale.workers >= 1`` (the default: 1) it runs through Ray Train --
N DDP workers, on a local Ray or a cluster (``--address`` / ``RAY_ADDRESS``); with
``scale.workers=0`` (``--workers 0``) the same loop runs in this process without Ray. Either way it
leaves a run directory (see :mod:`sslray.rundir`), prints one line per epoch and the summary as
JSON at the end. Bad config, data, arguments or a bad ``train.resume`` checkpoint fail before
anything is written: one line on stderr, exit code 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from sslray.cli import ArgumentParser, fail, int_at_least
from sslray.config import ConfigError, load_config, parse_overrides
from sslray.local_run import check_device, resume_checkpoint, train_local
from sslray.rundir import check_fresh, run_name


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m sslray.train", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="YAML config (see sslray/recipes/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=5")
    parser.add_argument("--workers", type=int_at_least(0),
                        help="Ray Train workers (0: no Ray); same as scale.workers=N")
    parser.add_argument("--address", help="Ray cluster address; same as scale.address=ADDR")
    args = parser.parse_intermixed_args(argv)  # overrides may follow options

    from sslray.data import DataError

    try:
        changes = parse_overrides(args.overrides)  # text read once, here: typed values from now on
        if args.workers is not None:
            changes["scale.workers"] = args.workers
        if args.address:
            changes["scale.address"] = args.address
        cfg = load_config(args.config, changes)
        check_device(cfg)
        cfg = cfg.updated({"train.run_name": run_name(cfg)})  # fixed once: a retried or resumed run keeps its folder
        run_dir = Path(cfg.train.output_dir) / cfg.train.run_name
        check_fresh(run_dir, cfg)
        resume_from, resume_state = resume_checkpoint(cfg, run_dir)  # read once, checked before any work
        if cfg.scale.workers == 0:
            summary = train_local(cfg, run_dir, resume_from=resume_from, resume_state=resume_state)
        else:
            from sslray.ray_train import train_ray

            del resume_state  # each worker reads train.resume itself
            summary = train_ray(cfg, run_dir)
    except (ConfigError, DataError) as e:
        return fail(str(e))
    print(json.dumps(summary, indent=2))
    return 0 if summary["status"] in ("finished", "diverged") else 1


if __name__ == "__main__":
    sys.exit(main())
