"""MLflow record of one distillation: one run, tagged ``sslray.role = distill``.

    params     exactly what ran: the teacher as given, its epoch, encoder, method and projector,
               the layer fine-tuned from, label fraction and labelled-image count, temperature,
               alpha, epochs, batch size, optimiser, learning rates, weight decay, student
               encoder and width, seed, device and precision, the data and eval settings
    metrics    per epoch (step = epoch): finetune_loss, finetune_acc, finetune_lr, finetune_time_s;
               distill_loss, distill_agreement (student argmax = teacher argmax), distill_ce
               (alpha > 0), distill_lr, distill_time_s;
               at the end: teacher_finetune_top1, student_top1, student_knn_top1,
               student_probe_top1, student_teacher_agreement (test split, in [0, 1])
    artifacts  checkpoint/checkpoint.pt (the student: ``runs:/RUN_ID`` loads it with
               sslray.checkpoint, like a search's best encoder), config.json (the student's
               config), summary.json
    status     FINISHED; FAILED on an error, KILLED on Ctrl-C

The tracking store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``<output>/mlflow.db``
-- as a search keeps its own ``mlflow.db`` unless told otherwise. With a SQLite store, artifacts go
to ``mlartifacts/`` next to the database file.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sslray.tracking import Tracker, sqlite_file, tags

ROLE_TAG = tags.ROLE


class DistillRun:
    """The run, created on construction; every call logs at once (a crash keeps what was logged)."""

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]):
        self.uri = uri
        self.tracker = Tracker(uri)
        db = sqlite_file(uri)
        # artifacts beside a SQLite store (the search's layout), the server's default location otherwise
        self.experiment_id = self.tracker.experiment(experiment, db.parent if db else Path("."))
        self.run_id = self.tracker.start_run(self.experiment_id, run_name, {ROLE_TAG: "distill", **tags})
        self.tracker.log_params(self.run_id, params)

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        self.tracker.log_metrics(self.run_id, {k: float(v) for k, v in metrics.items()
                                               if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)},
                                 step=epoch)

    def finish(self, metrics: dict[str, float], checkpoint: Path, config: dict, summary: dict, note: str) -> None:
        self.log_epoch(metrics, 0)
        self.tracker.log_file(self.run_id, checkpoint, "checkpoint")
        self.tracker.log_dict(self.run_id, config, "config.json")
        self.tracker.log_dict(self.run_id, summary, "summary.json")
        self.tracker.set_note(self.run_id, note)
        self.tracker.end_run(self.run_id, "FINISHED")

    def end(self, status: str) -> None:
        self.tracker.end_run(self.run_id, status)
