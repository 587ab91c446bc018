"""CUDA code paths: skipped on machines without a GPU (CI here has none); run on a GPU host with
``python -m pytest tests/test_cuda.py``."""
import pytest
import torch

from sslray.config import ViewConfig, load_config
from sslray.views import Crops, apply_view, sample_view_params

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_view_path_matches_cpu_path():
    """On CUDA the colour ops and blur run on the whole batch under torch.where (no host sync); on
    the CPU they run on the selected rows. Same parameters -> same images."""
    vc = ViewConfig(blur_p=0.5, solarize_p=0.3)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).float() / 255
    params = sample_view_params(vc, 64, 32, 32, torch.Generator().manual_seed(1))
    cpu = apply_view(x, params, vc, 32)
    gpu = apply_view(x.cuda(), {k: v.cuda() for k, v in params.items()}, vc, 32)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


def test_cuda_crops_do_not_sync_with_the_host():
    """Every crop of a batch is computed without a device -> host sync (CUDA's sync debug mode
    raises on one). The first call copies the normalisation constants to the device."""
    cfg = load_config({"views": {"preset": "asymmetric"}}).views
    crops = Crops(cfg)
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    crops(x, g)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        views = crops(x, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [v.shape for v in views] == [(256, 3, 32, 32)] * 2


def test_cuda_training_uses_bf16_and_channels_last(tiny_cfg, tmp_path):
    from sslray.loop import resolve_runtime, run
    from sslray.local_run import LocalReporter

    cfg = load_config(tiny_cfg)
    rt = resolve_runtime(cfg)
    assert rt.device.type == "cuda" and rt.amp_dtype == torch.bfloat16 and rt.channels_last
    summary = run(cfg, LocalReporter(cfg, tmp_path / "r", None, echo=False))
    assert summary["status"] == "finished" and summary["metrics"]["knn_top1"] > 0


def test_cuda_compiled_training_with_bf16_and_channels_last(tiny_cfg, tmp_path):
    """A few compiled steps on the GPU path (bf16 autocast, channels_last): finite losses, and the
    checkpoint holds the plain method's keys (never the compiled wrapper's ``_orig_mod.``)."""
    from sslray.checkpoint import load_checkpoint
    from sslray.loop import resolve_runtime, run
    from sslray.methods import build_method
    from sslray.local_run import LocalReporter

    tiny_cfg["train"].update(epochs=1, compile="true", device="cuda")
    tiny_cfg["data"]["synthetic_train_size"] = 96  # 3 steps of 32
    cfg = load_config(tiny_cfg)
    rt = resolve_runtime(cfg)
    assert rt.amp_dtype == torch.bfloat16 and rt.channels_last
    torch._dynamo.reset()
    rep = LocalReporter(cfg, tmp_path / "r", None, echo=False)
    summary = run(cfg, rep)
    torch._dynamo.reset()
    m = summary["metrics"]
    assert summary["status"] == "finished" and all(torch.isfinite(torch.tensor(m[k])) for k in m if k.startswith("loss"))
    assert m["eval_time_s"] > 0
    ckpt = load_checkpoint(rep.last_checkpoint)
    assert not any("_orig_mod" in k for k in ckpt["model"])
    build_method(cfg, ckpt["num_classes"]).load_state_dict(ckpt["model"])
