"""``python -m sslray.train CONFIG.yaml [key.sub=value ...] [--workers N] [--address ADDR]``

One pretraining run. With ``scale.workers >= 1`` (the default: 1) it runs through Ray Train --
N DDP workers, on a local Ray or a cluster (``--address`` / ``RAY_ADDRESS``); with
``scale.workers=0`` (``--workers 0``) the same loop runs in this process without Ray. Either way it
leaves a run directory (see :mod:`sslray.rundir`), prints one line per epoch and the summary as
JSON at the end. Bad config or data fail before anything is written, with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sslray.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from sslray.config import Config, ConfigError, load_config
from sslray.rundir import RunDir, check_fresh, run_name


class LocalReporter:
    """Reporter of a single-process run: checkpoints and metrics in its run directory."""

    def __init__(self, cfg: Config, run_dir: Path, resume_from: Path | None, echo: bool = True):
        self.cfg, self.resume_from = cfg, resume_from
        self.dir = RunDir(cfg, run_dir, echo)
        self.ckpt_dir = Path(run_dir) / "checkpoints"
        self.last_checkpoint: Path | None = resume_from

    def resume_state(self) -> dict | None:
        return load_checkpoint(self.resume_from) if self.resume_from else None

    def log(self, line: str) -> None:
        self.dir.log(line)

    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None:
        if checkpoint is not None:
            self.last_checkpoint = save_checkpoint(checkpoint, checkpoint_path(self.ckpt_dir, checkpoint["epoch"]))
            prune_checkpoints(self.ckpt_dir, self.cfg.train.keep_checkpoints)
        self.dir.add_metrics(metrics)


def resolve_resume(cfg: Config, run_dir: Path) -> Path | None:
    """The checkpoint a single-process run resumes from (None: start fresh)."""
    t = cfg.train
    if t.resume is None:
        return None
    if t.resume == "auto":
        if not t.run_name:
            raise ConfigError("train.resume=auto needs train.run_name (the run to continue)")
        return latest_checkpoint(run_dir)  # None: nothing to resume yet
    path = Path(t.resume)
    if not path.exists():
        raise ConfigError(f"train.resume: {path} does not exist; allowed: a checkpoint file, a run directory or 'auto'")
    return latest_checkpoint(path) if path.is_dir() else path


def train_local(cfg: Config, run_dir: Path, echo: bool = True) -> dict[str, Any]:
    from sslray.loop import run

    reporter = LocalReporter(cfg, run_dir, resolve_resume(cfg, run_dir), echo)
    run(cfg, reporter)
    return reporter.dir.summary(str(reporter.last_checkpoint) if reporter.last_checkpoint else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslray.train", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="YAML config (see sslray/recipes/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=5")
    parser.add_argument("--workers", type=int, help="Ray Train workers (0: no Ray); same as scale.workers=N")
    parser.add_argument("--address", help="Ray cluster address; same as scale.address=ADDR")
    args = parser.parse_intermixed_args(argv)  # overrides may follow options
    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"scale.workers={args.workers}")
    if args.address:
        overrides.append(f"scale.address={args.address}")

    from sslray.data import DataError

    try:
        cfg = load_config(args.config, overrides)
        cfg.train.run_name = run_name(cfg)  # fixed once, so a retried or resumed run keeps its folder
        run_dir = Path(cfg.train.output_dir) / cfg.train.run_name
        check_fresh(run_dir, cfg)
        if cfg.scale.workers == 0:
            summary = train_local(cfg, run_dir)
        else:
            from sslray.ray_train import train_ray

            summary = train_ray(cfg, run_dir)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0 if summary["status"] in ("finished", "diverged") else 1


if __name__ == "__main__":
    sys.exit(main())
