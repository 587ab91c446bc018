"""End-to-end pretraining runs on tiny synthetic data: the CLI, checkpoints, resume, divergence."""
import json
import subprocess
import sys

import pytest
import torch
import yaml

import sslray
from sslray.checkpoint import list_checkpoints, load_checkpoint
from sslray.config import load_config
from sslray.loop import run
from sslray.methods import METHODS
from sslray.local_run import LocalReporter
from sslray.train import main as train_main


def _run(cfg_dict, run_dir, resume=None):
    cfg = load_config(cfg_dict)
    rep = LocalReporter(cfg, run_dir, resume, echo=False)
    return run(cfg, rep), rep


def test_cli_run_writes_metrics_checkpoints_and_summary(tiny_cfg, tmp_path, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    assert train_main([str(cfg_path), "train.epochs=3", "loss.name=vicreg_tico", "loss.params.nu=0.01"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "t"
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    for m in lines:
        for key in ("loss", "loss_inv", "loss_var", "loss_cov", "probe_loss", "knn_top1", "probe_top1",
                    "rankme", "emb_std", "img_per_s", "lr"):
            assert key in m and m[key] == m[key], key  # present and not NaN
        assert m["img_per_s"] > 0 and 0 <= m["knn_top1"] <= 1
        # the total is the weighted sum of the logged terms (lam, mu defaults 25, nu=0.01)
        assert m["loss"] == pytest.approx(25 * m["loss_inv"] + 25 * m["loss_var"] + 0.01 * m["loss_cov"], rel=1e-4)
    assert "epoch   3/3 | loss" in out and "img/s" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 3
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["loss"]["name"] == "vicreg_tico"
    # checkpoint: loads with weights_only, has every part, TiCo's C inside and non-zero
    ckpt = load_checkpoint(summary["checkpoint"])
    assert ckpt["epoch"] == 3 and {"model", "optimizer", "probe_optimizer", "rng", "config"} <= set(ckpt)
    assert ckpt["model"]["loss.C"].abs().sum() > 0
    enc = sslray.load_encoder(run_dir)
    assert not enc.training and enc(torch.randn(2, 3, 16, 16)).shape == (2, 32)


def test_training_learns_on_synthetic_data(tiny_cfg, tmp_path):
    """A real learning check: kNN after pretraining beats the untrained encoder by a margin."""
    from sslray.eval.offline import evaluate_checkpoint

    # 48 epochs: margins 0.37-0.43 over seeds 0-3 (24 epochs gave 0.03-0.29, a coin flip)
    tiny_cfg["train"].update(epochs=48, batch_size=64, checkpoint_every=0)
    tiny_cfg["data"].update(synthetic_train_size=1024, synthetic_test_size=512, synthetic_image_size=32)
    tiny_cfg["views"]["size"] = 32
    tiny_cfg["model"].update(width=8, projector="128-128")
    tiny_cfg["optim"].update(lr=0.02)
    tiny_cfg["eval"].update(every=0, knn_k=20)
    summary, rep = _run(tiny_cfg, tmp_path / "r")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    base = evaluate_checkpoint(str(cfg_path), ["eval.probe_epochs=5"])
    trained = evaluate_checkpoint(str(rep.last_checkpoint), ["eval.probe_epochs=5"])
    assert base["untrained"] and not trained["untrained"]
    assert trained["knn_top1"] > base["knn_top1"] + 0.15, (base["knn_top1"], trained["knn_top1"])
    assert trained["knn_top1"] == pytest.approx(summary["metrics"]["knn_top1"], abs=1e-6)


REQUIRED = {"vicreg_tico": {"nu": 0.01},  # parameters without a default, or whose default does not fit here
            "wmse": {"w_size": 16.0, "w_iter": 2.0}}  # 2 sub-batches of the 32; random cuts (state) in pass 2
PROJECTOR = {"wmse": "32-8"}  # W-MSE's sub-batch must exceed the embedding width


@pytest.mark.parametrize("loss", [m for m in METHODS if m not in ("vicreg", "tico")])  # tico's C: vicreg_tico's
def test_resume_gives_identical_weights(tiny_cfg, tmp_path, loss):
    """Every method's whole state -- networks, EMA targets, queues, C, step counters -- survives a
    checkpoint and resume bit-identically."""
    tiny_cfg["train"]["epochs"] = 3
    tiny_cfg["loss"] = {"name": loss, "params": REQUIRED.get(loss, {})}
    tiny_cfg["model"]["projector"] = PROJECTOR.get(loss, tiny_cfg["model"]["projector"])
    tiny_cfg["optim"]["name"] = "lars"
    _run(tiny_cfg, tmp_path / "full")
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_0003.pt")
    # a second run resumed from the uninterrupted run's epoch-2 checkpoint
    summary, _ = _run(tiny_cfg, tmp_path / "resumed", resume=tmp_path / "full" / "checkpoints" / "epoch_0002.pt")
    assert summary["epochs_completed"] == 3
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "epoch_0003.pt")
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["epoch_0003.pt"]  # no epoch redone
    assert full["model"].keys() == resumed["model"].keys()
    for k in full["model"]:  # the method's state_dict: loss.C, target_*, queue, ... included
        assert torch.equal(full["model"][k], resumed["model"][k]), f"model.{k} differs after resume"
    assert full["metrics"]["loss"] == resumed["metrics"]["loss"]


def test_cli_resume_auto_continues_a_run(tiny_cfg, tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    assert train_main([str(cfg_path), "train.epochs=1"]) == 0
    # the same run name again without resume is refused, not overwritten
    assert train_main([str(cfg_path), "train.epochs=2"]) == 2
    assert train_main([str(cfg_path), "train.epochs=2", "train.resume=auto"]) == 0
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "runs" / "t" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_non_finite_loss_is_a_recorded_result(tiny_cfg, tmp_path):
    tiny_cfg["train"]["epochs"] = 4
    tiny_cfg["optim"] = {"name": "sgd", "lr": 1e30, "warmup_epochs": 0}
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    proc = subprocess.run([sys.executable, "-m", "sslray.train", str(cfg_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "runs" / "t" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite loss at epoch" in summary["reason"]
    assert summary["epochs_completed"] < 4
    last = json.loads((tmp_path / "runs" / "t" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["status"] == "diverged"
    # the log names the checkpoint that is kept -- or says there is none
    saved = [p.name for p in list_checkpoints(tmp_path / "runs" / "t")]
    kept = f"the checkpoint of epoch {summary['epochs_completed']} is kept" if saved else "no checkpoint had been written"
    assert f"stopped: {summary['reason']}; {kept}" in (tmp_path / "runs" / "t" / "log.txt").read_text()


_DIE_BEFORE_METRICS = """
import os, sys
from sslray.rundir import RunDir
from sslray.train import main

add = RunDir.add_metrics
def add_or_die(self, metrics):  # the process dies after epoch 2's checkpoint, before its metrics line
    if metrics.get("epoch") == 2 and (self.path / "checkpoints" / "epoch_0002.pt").exists():
        os._exit(9)
    add(self, metrics)
RunDir.add_metrics = add_or_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_between_checkpoint_and_metrics_line_loses_no_epoch(tiny_cfg, tmp_path):
    """The window between writing an epoch's checkpoint and its metrics line: after a kill there
    and train.resume=auto, every epoch is in metrics.jsonl exactly once."""
    tiny_cfg["train"]["epochs"] = 3
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    died = subprocess.run([sys.executable, "-c", _DIE_BEFORE_METRICS, str(cfg_path)], capture_output=True, text=True)
    run_dir = tmp_path / "runs" / "t"
    assert died.returncode == 9, died.stderr[-2000:]
    assert (run_dir / "checkpoints" / "epoch_0002.pt").exists()
    assert [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1]
    assert train_main([str(cfg_path), "train.resume=auto"]) == 0
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1] == {**load_checkpoint(run_dir / "checkpoints" / "epoch_0002.pt")["metrics"]}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 3


def test_eval_cli_reports_knn_and_offline_probe(tiny_cfg, tmp_path):
    _, rep = _run(tiny_cfg, tmp_path / "r")
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "sslray.eval", str(tmp_path / "r"), "eval.probe_epochs=3",
                           "--output", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["epoch"] == 2 and res["test_images"] == 128
    assert 0.1 < res["knn_top1"] <= 1 and 0 < res["probe_test_top1"] <= 1 and res["rankme"] > 1
    bad = subprocess.run([sys.executable, "-m", "sslray.eval", str(tmp_path / "nope.pt")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr


def test_bad_data_fails_before_anything_is_written(tiny_cfg, tmp_path):
    tiny_cfg["data"] = {"source": "parquet", "train_path": str(tmp_path / "missing.parquet")}
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    proc = subprocess.run([sys.executable, "-m", "sslray.train", str(cfg_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "missing.parquet" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_shard_batches_partition_each_epoch_without_overlap():
    from sslray.loop import shard_batches

    ranks = [shard_batches(100, 8, epoch=3, seed=0, rank=r, world=3) for r in range(3)]
    assert all(b.shape == (4, 8) for b in ranks)  # 100 // (8 * 3) = 4 full global batches
    seen = torch.cat([b.flatten() for b in ranks])
    assert seen.unique().numel() == seen.numel() == 96  # disjoint across ranks
    again = shard_batches(100, 8, epoch=3, seed=0, rank=1, world=3)
    assert torch.equal(again, ranks[1])  # deterministic
    assert not torch.equal(shard_batches(100, 8, epoch=4, seed=0, rank=1, world=3), ranks[1])  # reshuffled
    with pytest.raises(ValueError, match="exceeds"):
        shard_batches(10, 8, epoch=0, seed=0, rank=0, world=2)


def test_readme_smoke_command(tmp_path):
    """`python -m sslray.train sslray/recipes/smoke_synthetic.yaml` as the README shows it."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "sslray.train", str(repo / "sslray/recipes/smoke_synthetic.yaml")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 3
    assert 0 < summary["metrics"]["knn_top1"] <= 1
