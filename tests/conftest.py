import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10"

# Keep torch from oversubscribing the 2 cores when pytest and subprocesses both run.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def tiny_cfg(tmp_path):
    """A seconds-long synthetic config dict (tiny CNN, tiny data)."""
    return tiny_config(tmp_path)


def tiny_config(tmp_path) -> dict:
    """tiny_cfg's dict, for fixtures of a wider scope (they cannot use a function-scoped fixture)."""
    return {
        "data": {"source": "synthetic", "synthetic_train_size": 256, "synthetic_test_size": 128,
                 "synthetic_image_size": 16},
        "views": {"preset": "symmetric", "size": 16},
        "model": {"encoder": "small_cnn", "width": 4, "projector": "32-32"},
        "loss": {"name": "vicreg"},
        "optim": {"name": "adamw", "lr": 1e-3, "warmup_epochs": 1},
        "train": {"epochs": 2, "batch_size": 32, "output_dir": str(tmp_path / "runs"), "run_name": "t",
                  "checkpoint_every": 1, "keep_checkpoints": 5},
        "eval": {"every": 1, "knn_k": 10, "probe_epochs": 5},
        "scale": {"workers": 0},  # in-process; Ray Train has its own tests
    }


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: a second OpenMP thread only adds wake-up latency (10x slower on a busy box).
    Use per module: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def requires_cifar():
    return pytest.mark.skipif(not (CIFAR / "train.parquet").exists(),
                              reason=f"real CIFAR-10 parquet not found at {CIFAR}")


def _gloo_entry(rank, world, fn, init_file, out_dir):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(fn(rank, world), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_gloo_workers(fn, tmp_dir, world=2):
    """Run ``fn(rank, world)`` in ``world`` CPU processes joined by a gloo process group; returns
    each rank's return value (tensors / plain data), in rank order."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_gloo_entry, args=(world, fn, str(Path(tmp_dir) / "init"), str(tmp_dir)), nprocs=world, join=True)
    return [torch.load(Path(tmp_dir) / f"rank{r}.pt", weights_only=True) for r in range(world)]
