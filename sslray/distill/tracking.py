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
import os
import time
from pathlib import Path
from typing import Any

ROLE_TAG = "sslray.role"


def tracking_uri(given: str | None, output: Path) -> str:
    return given or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output).absolute() / 'mlflow.db'}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


class DistillRun:
    """The run, created on construction; every call logs at once (a crash keeps what was logged)."""

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]):
        from mlflow.tracking import MlflowClient

        from sslray.search.tracking import mlflow_experiment, mlflow_param

        self.uri = uri
        self.client = MlflowClient(uri)
        db = sqlite_file(uri)
        # artifacts beside a SQLite store (the search's layout), the server's default location otherwise
        self.experiment_id = mlflow_experiment(self.client, experiment, db.parent if db else Path("."), uri)
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={ROLE_TAG: "distill", **tags})
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[mlflow_param(k, v) for k, v in params.items()])

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, epoch) for k, v in metrics.items()
                 if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, metrics: dict[str, float], checkpoint: Path, config: dict, summary: dict, note: str) -> None:
        self.log_epoch(metrics, 0)
        self.client.log_artifact(self.run_id, str(checkpoint), artifact_path="checkpoint")
        self.client.log_dict(self.run_id, config, "config.json")
        self.client.log_dict(self.run_id, summary, "summary.json")
        self.client.set_tag(self.run_id, "mlflow.note.content", note)
        self.client.set_terminated(self.run_id, "FINISHED")

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)
