"""Ray Train end to end: 2 DDP workers, a worker killed mid-run, and a real two-node cluster."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

pytestmark = pytest.mark.slow


def _cfg(tmp_path, **over):
    cfg = {
        "data": {"source": "synthetic", "synthetic_train_size": 256, "synthetic_test_size": 128,
                 "synthetic_image_size": 16},
        "views": {"preset": "symmetric", "size": 16},
        "model": {"encoder": "small_cnn", "width": 4, "projector": "32-32"},
        "loss": {"name": "vicreg_tico", "params": {"nu": 0.01}},
        "optim": {"name": "adamw", "lr": 1e-3, "warmup_epochs": 1},
        "train": {"epochs": 2, "batch_size": 32, "output_dir": str(tmp_path / "runs"), "run_name": "r",
                  "checkpoint_every": 1, "keep_checkpoints": 5},
        "eval": {"every": 1, "knn_k": 10, "probe_epochs": 5},
        "scale": {"workers": 2},
    }
    for key, value in over.items():
        section, name = key.split("__")
        cfg[section][name] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _metrics(tmp_path):
    return [json.loads(x) for x in (tmp_path / "runs" / "r" / "metrics.jsonl").read_text().splitlines()]


def test_two_workers_through_the_cli(tmp_path):
    cfg = _cfg(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "sslray.train", str(cfg)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2 and summary["workers"] == 2
    rows = _metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert len(r["worker_nodes"]) == 2  # both ranks reported
        assert {"loss", "loss_inv", "loss_var", "loss_cov", "knn_top1", "probe_top1", "rankme", "img_per_s"} <= set(r)
    assert "batch 32/worker x 2 = 64 global" in proc.stdout
    # 256 images / 64 global batch = 4 steps per epoch: each rank saw half of every global batch
    ckpt_dir = tmp_path / "runs" / "r" / "epoch_0002"
    assert (ckpt_dir / "checkpoint.pt").exists() and summary["checkpoint"] == str(ckpt_dir / "checkpoint.pt")
    import sslray

    enc = sslray.load_encoder(summary["checkpoint"])
    assert enc.out_dim == 32
    from sslray.checkpoint import load_checkpoint

    state = load_checkpoint(summary["checkpoint"])
    assert state["epoch"] == 2 and state["model"]["loss.C"].abs().sum() > 0  # TiCo's C travels in the checkpoint


def test_moco_on_two_ray_workers_keeps_one_queue_and_its_key_network(tmp_path):
    """The method with the most state -- a key network, a queue gathered from both ranks -- through
    the real Ray Train path: the queue pointer counts every key of both ranks and both views, the
    queue holds unit keys, and the EMA key network has moved away from its start (resume and the
    exact 2-vs-1 numerics: tests/test_moco.py, tests/test_train.py)."""
    import torch

    from sslray.checkpoint import load_checkpoint

    cfg = _cfg(tmp_path, loss__name="moco", loss__params={"queue_size": 1000, "momentum": 0.9})
    proc = subprocess.run([sys.executable, "-m", "sslray.train", str(cfg)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["workers"] == 2
    assert {"loss", "loss_infonce", "knn_top1"} <= set(_metrics(tmp_path)[-1])
    state = load_checkpoint(summary["checkpoint"])["model"]
    steps = 2 * (256 // 64)  # 2 epochs of 4 global batches of 64
    assert int(state["queue_ptr"]) == steps * 64 * 2 % 1000  # every key of both ranks, both views
    written = state["queue"][: steps * 64 * 2 % 1000]
    torch.testing.assert_close(written.norm(dim=1), torch.ones(len(written)), rtol=0, atol=1e-5)
    from sslray.config import load_config
    from sslray.methods import build_method

    torch.manual_seed(0)  # train.seed: the run's initial weights
    start = build_method(load_config(cfg), 10).state_dict()
    weights = [k for k, v in state.items() if k.startswith("encoder.") and v.is_floating_point()]
    key = {k: state["key_" + k] for k in weights}
    assert max((key[k] - start[k]).abs().max().item() for k in weights) > 1e-4  # the EMA moved it...
    assert max((key[k] - state[k]).abs().max().item() for k in weights) > 1e-4  # ...behind the online encoder


def _all_ray_worker_pids() -> list[int]:
    """PIDs of Ray Train worker processes (their process title names the actor class)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if "RayTrainWorker" in line]


def test_killed_worker_restarts_from_the_latest_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, train__epochs=4, data__synthetic_train_size=2048, scale__max_failures=2)
    before = set(_all_ray_worker_pids())
    proc = subprocess.Popen([sys.executable, "-m", "sslray.train", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        metrics_file = tmp_path / "runs" / "r" / "metrics.jsonl"
        while time.time() < deadline and not (metrics_file.exists() and metrics_file.read_text().strip()):
            time.sleep(0.2)
        assert metrics_file.exists(), "epoch 1 never finished"
        time.sleep(0.5)  # inside epoch 2
        victims = [p for p in _all_ray_worker_pids() if p not in before]
        assert victims, "no Ray Train worker process found"
        os.kill(victims[-1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    rows = _metrics(tmp_path)
    epochs = [r["epoch"] for r in rows]
    assert epochs == [1, 2, 3, 4], epochs  # no epoch before the checkpoint redone, none lost
    assert "resumed from epoch" in out
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["status"] == "finished" and "knn_top1" in summary["metrics"]


def test_two_node_cluster_runs_one_worker_per_node(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from sslray.config import load_config
    from sslray.ray_train import train_ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 2**20})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(node_ids) == 2
        cfg = load_config(_cfg(tmp_path), ["scale.placement_strategy=STRICT_SPREAD", f"scale.address={cluster.address}"])
        summary = train_ray(cfg, tmp_path / "runs" / "r")
        assert summary["status"] == "finished" and summary["epochs_completed"] == 2
        for row in _metrics(tmp_path):
            assert set(row["worker_nodes"]) == node_ids  # one worker on each node, both did work
            assert row["knn_top1"] > 0
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_non_finite_loss_ends_a_ray_run_without_retries(tmp_path):
    cfg = _cfg(tmp_path, train__epochs=3, scale__max_failures=3)
    text = cfg.read_text().replace("lr: 0.001", "lr: 1.0e+30").replace("name: adamw", "name: sgd")
    cfg.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "sslray.train", str(cfg)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite loss" in summary["reason"]
    assert "resumed from epoch" not in proc.stdout + proc.stderr  # a result, not a retried failure
