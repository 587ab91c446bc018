"""The run directory: what one pretraining run leaves behind for people and tools.

    <train.output_dir>/<run name>/
        config.yaml      the full resolved config
        metrics.jsonl    one JSON object per epoch (rank 0's, epoch-averaged over ranks)
        log.txt          the lines printed
        checkpoints/     epoch_NNNN.pt (single-process runs; Ray Train runs keep theirs in
                         <storage>/<run name>/epoch_NNNN/checkpoint.pt)
        summary.json     status, reason, last and best metrics, the final checkpoint

It is created lazily, on the first line written, so a run that fails during setup (bad data)
leaves nothing behind.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sslray.config import Config, ConfigError, dump_config


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    if "status" in m:
        return f"epoch {m['epoch']}/{epochs} | {m['status']}: {m['reason']}"
    terms = " ".join(f"{k[5:]} {v:.4g}" for k, v in m.items() if k.startswith("loss_"))
    line = f"epoch {m['epoch']:>3}/{epochs} | loss {m['loss']:.4f} ({terms}) | lr {m['lr']:.3g}"
    if "knn_top1" in m:
        line += (f" | knn {100 * m['knn_top1']:.2f}% probe {100 * m['probe_top1']:.2f}%"
                 f" | rankme {m['rankme']:.1f} std {m['emb_std_ratio']:.2f}")
    return line + f" | {m['img_per_s']:.0f} img/s {m['epoch_time_s']:.1f}s"


class RunDir:
    def __init__(self, cfg: Config, path: Path, echo: bool = True):
        self.cfg, self.path, self.echo = cfg, Path(path), echo
        self._started = False

    def start(self) -> None:
        if not self._started:
            self.path.mkdir(parents=True, exist_ok=True)
            dump_config(self.cfg, self.path / "config.yaml")
            self._started = True

    def log(self, line: str) -> None:
        self.start()
        if self.echo:
            print(line, flush=True)
        with open(self.path / "log.txt", "a") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")

    def add_metrics(self, metrics: dict[str, Any]) -> None:
        """Append one epoch's metrics; an epoch already recorded (a replayed report) is skipped."""
        self.start()
        if "status" not in metrics and any(r.get("epoch") == metrics.get("epoch") and "status" not in r
                                           for r in self.metrics()):
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self.log(format_epoch(metrics, self.cfg.train.epochs))

    def metrics(self) -> list[dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []

    def summary(self, checkpoint: str | None, **extra: Any) -> dict[str, Any]:
        """Written at the end of every run, from metrics.jsonl (so it is the same for both paths)."""
        rows = self.metrics()
        last = rows[-1] if rows else {}
        evaluated = [r for r in rows if "knn_top1" in r]
        best = max(evaluated, key=lambda r: r["knn_top1"]) if evaluated else None
        done = [r["epoch"] for r in rows if "status" not in r]
        summary = {
            "status": last.get("status", "finished" if done and max(done) == self.cfg.train.epochs else "failed"),
            "reason": last.get("reason"),
            "epochs_completed": max(done) if done else 0, "metrics": last,
            "best": {"knn_top1": best["knn_top1"], "epoch": best["epoch"]} if best else {},
            "run_dir": str(self.path), "checkpoint": checkpoint, **extra,
        }
        self.start()
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def run_name(cfg: Config) -> str:
    return cfg.train.run_name or f"{cfg.loss.name}-{cfg.model.encoder}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_fresh(path: Path, cfg: Config) -> None:
    if cfg.train.resume is None and (path / "metrics.jsonl").exists():
        raise ConfigError(f"train.run_name: {path} already holds a run; allowed: train.resume=auto to continue it, "
                          "or another train.run_name")
