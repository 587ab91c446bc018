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


def requires_cifar():
    return pytest.mark.skipif(not (CIFAR / "train.parquet").exists(),
                              reason=f"real CIFAR-10 parquet not found at {CIFAR}")
