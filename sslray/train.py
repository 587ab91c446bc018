"""``python -m sslray.train CONFIG.yaml [key.sub=value ...]``: one pretraining run.

Writes a run directory ``<train.output_dir>/<train.run_name>/`` with ``config.yaml`` (the full
resolved config), ``metrics.jsonl`` (one JSON object per epoch), ``log.txt``, ``checkpoints/``
and ``summary.json``; prints one line per epoch and the summary as JSON at the end.
The directory is created only once data and model are set up, so a bad config or dataset leaves
nothing behind.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sslray.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from sslray.config import Config, ConfigError, dump_config, load_config


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    if "status" in m:
        return f"epoch {m['epoch']}/{epochs} | {m['status']}: {m['reason']}"
    terms = " ".join(f"{k[5:]} {v:.4g}" for k, v in m.items() if k.startswith("loss_"))
    line = f"epoch {m['epoch']:>3}/{epochs} | loss {m['loss']:.4f} ({terms}) | lr {m['lr']:.3g}"
    if "knn_top1" in m:
        line += (f" | knn {100 * m['knn_top1']:.2f}% probe {100 * m['probe_top1']:.2f}%"
                 f" | rankme {m['rankme']:.1f} std {m['emb_std_ratio']:.2f}")
    return line + f" | {m['img_per_s']:.0f} img/s {m['epoch_time_s']:.1f}s"


class LocalReporter:
    """Metrics, logs and checkpoints of a single-process run, in its run directory."""

    def __init__(self, cfg: Config, run_dir: Path, resume_from: Path | None, echo: bool = True):
        self.cfg, self.run_dir, self.resume_from, self.echo = cfg, run_dir, resume_from, echo
        self.ckpt_dir = run_dir / "checkpoints"
        self.last_checkpoint: Path | None = resume_from
        self._started = False

    def _start(self) -> None:
        if not self._started:  # created lazily: nothing is written before setup succeeded
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            dump_config(self.cfg, self.run_dir / "config.yaml")
            self._started = True

    def resume_state(self) -> dict | None:
        return load_checkpoint(self.resume_from) if self.resume_from else None

    def log(self, line: str) -> None:
        self._start()
        if self.echo:
            print(line, flush=True)
        with open(self.run_dir / "log.txt", "a") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")

    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None:
        self._start()
        if checkpoint is not None:
            self.last_checkpoint = save_checkpoint(checkpoint, checkpoint_path(self.ckpt_dir, checkpoint["epoch"]))
            prune_checkpoints(self.ckpt_dir, self.cfg.train.keep_checkpoints)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self.log(format_epoch(metrics, self.cfg.train.epochs))


def resolve_run_dir(cfg: Config) -> tuple[Path, Path | None]:
    """The run directory and the checkpoint to resume from (if any)."""
    t = cfg.train
    name = t.run_name or f"{cfg.loss.name}-{cfg.model.encoder}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(t.output_dir) / name
    if t.resume is None:
        if (run_dir / "metrics.jsonl").exists():
            raise ConfigError(f"train.run_name: {run_dir} already holds a run; pass train.resume=auto to continue it "
                              "or choose another train.run_name")
        return run_dir, None
    if t.resume == "auto":
        if not t.run_name:
            raise ConfigError("train.resume=auto needs train.run_name (the run to continue)")
        return run_dir, latest_checkpoint(run_dir)  # None: nothing to resume yet, start fresh
    path = Path(t.resume)
    if not path.exists():
        raise ConfigError(f"train.resume: {path} does not exist; allowed: a checkpoint file, a run directory or 'auto'")
    return run_dir, (latest_checkpoint(path) if path.is_dir() else path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslray.train", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="YAML config (see sslray/recipes/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=5")
    args = parser.parse_args(argv)

    from sslray.data import DataError
    from sslray.loop import run

    try:
        cfg = load_config(args.config, args.overrides)
        run_dir, resume_from = resolve_run_dir(cfg)
        reporter = LocalReporter(cfg, run_dir, resume_from)
        summary = run(cfg, reporter)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary.update(run_dir=str(run_dir), checkpoint=str(reporter.last_checkpoint) if reporter.last_checkpoint else None)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
