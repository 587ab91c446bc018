"""bench/gpu_throughput.py: its figures, its refusal without a GPU, and a CPU smoke run end to end
(the GPU numbers themselves come from running it on a GPU host)."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import CIFAR, REPO, requires_cifar

SCRIPT = REPO / "bench" / "gpu_throughput.py"


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_lookup_and_mfu():
    b = _bench()
    assert b.peak_tflops("NVIDIA H100 80GB HBM3") == 989 and b.peak_tflops("NVIDIA H200") == 989
    assert b.peak_tflops("NVIDIA H100 PCIe") == 756 and b.peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert b.peak_tflops("Tesla V100-SXM2-16GB") is None and b.mfu(20_000, None) is None
    # 20,000 img/s x 2 views x 3.3 GFLOPs = 132 TFLOP/s of an H100's 989
    assert b.mfu(20_000, 989) == pytest.approx(132 / 989)


def test_figures_skip_the_warm_up_epoch():
    rows = [{"epoch": 1, "img_per_s": 10.0, "epoch_time_s": 50.0, "eval_time_s": 9.0},
            {"epoch": 2, "img_per_s": 100.0, "epoch_time_s": 5.0, "eval_time_s": 0.5, "knn_top1": 0.3},
            {"epoch": 3, "img_per_s": 120.0, "epoch_time_s": 4.0, "eval_time_s": 0.4, "knn_top1": 0.4}]
    f = _bench().figures(rows, 70.0, None, recipe_eval_every=5)
    assert f["img_per_s"] == 110 and f["epochs_timed"] == [2, 3] and f["first_epoch_s"] == 50
    assert f["eval_fraction"] == pytest.approx(0.45 / 4.5) and f["eval_fraction_amortised"] == pytest.approx(0.02)
    assert f["knn_top1"] == 0.4 and f["status"] == "finished" and f["mfu"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_says_so_in_one_line_and_exits_2(capsys):
    assert _bench().main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a CUDA GPU" in err and "--device cpu" in err


@requires_cifar()
def test_cpu_smoke_run_prints_the_figures(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--limit", "32", "--batch", "16", "--epochs", "2",
         "--data-root", str(CIFAR.parent), "--json", str(tmp_path / "f.json")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    assert out.returncode == 0, out.stderr[-3000:]
    img_s = re.search(r"^training img/s \(2 views per image\)\s+([\d,.]+)\s+>= 20,000", out.stdout, re.M)
    assert img_s and float(img_s.group(1).replace(",", "")) > 0, out.stdout
    assert re.search(r"^MFU .*n/a", out.stdout, re.M)  # no bf16 peak for a CPU
    assert re.search(r"^evaluation / epoch's training time\s+[\d.]+ s / [\d.]+ s = [\d.]+ %\s+< 10 %", out.stdout, re.M)
    assert re.search(r"^kNN top-1 after 2 epoch\(s\)\s+[\d.]+ % \(finished", out.stdout, re.M)
