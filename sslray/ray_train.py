"""Ray Train (V2): the same worker loop on N DDP workers, one machine or a cluster.

Driver: ``train_ray`` builds a ``TorchTrainer`` (gloo on CPU, NCCL on GPU) whose workers run
:func:`sslray.loop.run` with a :class:`RayReporter`. Every epoch each worker calls
``ray.train.report`` (a barrier: all ranks call it equally often); rank 0 attaches the checkpoint,
which Ray persists to ``<storage>/<run name>/epoch_NNNN/``. A :class:`RunDirCallback` on the Train
controller -- which Ray places on the driver's node -- writes rank 0's metrics to the run
directory and prints the epoch line, exactly as a single-process run does.

Failures: ``FailureConfig(max_failures)`` restarts the worker group, and the loop resumes from the
latest reported checkpoint (``ray.train.get_checkpoint()``): no finished epoch is lost or redone.
A non-finite loss is a *result* (status "diverged"), not an exception, so it is never retried.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from sslray.checkpoint import RAY_CKPT_FILE as CKPT_FILE, load_checkpoint, save_checkpoint, storage_uri
from sslray.config import Config, from_dict


class RayReporter:
    """The loop's reporter inside a Ray Train worker."""

    def __init__(self, rank: int, resume_from: str | None = None):
        self.rank, self.resume_from = rank, resume_from

    def resume_state(self) -> dict | None:
        """Ray's latest checkpoint of this run (after a restart or a resumed fit), else the
        checkpoint named by train.resume, else None."""
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return load_checkpoint(self.resume_from) if self.resume_from else None
        with ckpt.as_directory() as d:  # downloads from remote storage if needed
            return load_checkpoint(Path(d) / CKPT_FILE)

    def log(self, line: str) -> None:
        if self.rank == 0:
            print(line, flush=True)

    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None:
        import ray
        import ray.train

        metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
        if checkpoint is None or self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(checkpoint, Path(d) / CKPT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=f"epoch_{checkpoint['epoch']:04d}")


def train_worker(loop_config: dict) -> None:
    """Entry point of every Ray Train worker."""
    import ray.train
    import ray.train.torch

    from sslray.loop import run

    cfg = from_dict(loop_config["config"])
    # Ray Train logs every report and checkpoint at INFO from every worker (loggers named by file
    # path in Ray 2.60): the epoch line already says it all.
    from ray.train.v2._internal.execution import context as _ctx, storage as _storage

    for mod in (_ctx, _storage):
        logging.getLogger(mod.__file__).setLevel(logging.WARNING)
    # Ray sets OMP_NUM_THREADS to the worker's CPU share; make torch use exactly that many threads.
    torch.set_num_threads(max(1, int(cfg.scale.cpus_per_worker)))
    if cfg.scale.use_gpu:
        torch.cuda.set_device(ray.train.torch.get_device())
    explicit = cfg.train.resume if cfg.train.resume not in (None, "auto") else None
    run(cfg, RayReporter(ray.train.get_context().get_world_rank(), explicit))


def _callback(run_dir: str, cfg_dict: dict, echo: bool = True):
    from ray.train import UserCallback

    class RunDirCallback(UserCallback):
        """Rank 0's metrics of every report into the run directory (runs on the driver's node)."""

        def __init__(self):
            from sslray.rundir import RunDir

            self.dir = RunDir(from_dict(cfg_dict), Path(run_dir), echo)

        def after_report(self, run_context, metrics, checkpoint) -> None:
            row = {k: v for k, v in metrics[0].items() if k != "node_id"}
            row["worker_nodes"] = [m.get("node_id") for m in metrics]  # which node each rank ran on
            self.dir.add_metrics(row)

    return RunDirCallback()


def build_trainer(cfg: Config, storage: str, extra_callbacks: list | None = None, echo: bool = True):
    """``echo``: print each epoch's line (a single run does; a search prints its own lines)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = cfg.scale
    resources = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    cfg_dict = cfg.to_dict()
    run_dir = str(Path(cfg.train.output_dir).absolute() / cfg.train.run_name)
    return TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg_dict},
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=s.workers, use_gpu=s.use_gpu, resources_per_worker=resources,
                                     placement_strategy=s.placement_strategy),
        run_config=RunConfig(
            name=cfg.train.run_name, storage_path=storage,
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=[_callback(run_dir, cfg_dict, echo)] + list(extra_callbacks or []),
        ),
    )


def _data_error(exc: BaseException):
    """The DataError raised in a worker, if that is what failed the run."""
    from sslray.data import DataError

    seen, todo = set(), [exc] + list(getattr(exc, "worker_failures", {}).values())
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DataError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def train_ray(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Run ``cfg`` through Ray Train; returns the run's summary."""
    from sslray.rundir import RunDir

    storage = cfg.scale.storage_path or str(Path(cfg.train.output_dir).absolute())
    local_storage = "://" not in storage
    fresh = local_storage and not (Path(storage) / cfg.train.run_name).exists()
    from sslray.resources import connect

    connect([cfg.scale], cfg.scale.address)  # a run the cluster can never hold fails now, not after waiting for ever
    trainer = build_trainer(cfg, storage)
    try:
        result = trainer.fit()
        error = None
    except Exception as e:  # a failure after max_failures retries: record it, keep what was finished
        data_err = _data_error(e)
        if data_err is not None:
            if fresh and not list((Path(storage) / cfg.train.run_name).glob("epoch_*")):
                shutil.rmtree(Path(storage) / cfg.train.run_name, ignore_errors=True)  # nothing half-written
            raise data_err from None
        result, error = None, e
    checkpoint = (storage_uri(storage, result.checkpoint.path)
                  if result is not None and result.checkpoint is not None else None)
    rd = RunDir(cfg, run_dir, echo=False)
    extra: dict[str, Any] = {"workers": cfg.scale.workers, "storage": f"{storage}/{cfg.train.run_name}"}
    if error is not None:
        extra["error"] = f"{type(error).__name__}: {error}"[:2000]
        extra["status"] = "failed"  # overrides the status derived from metrics.jsonl
    return rd.summary(checkpoint and f"{checkpoint}/{CKPT_FILE}", **extra)
