"""train.compile: the training forward under torch.compile gives the eager run's losses, and its
checkpoints are the plain method's (no ``_orig_mod.`` keys), loadable without compiling.

torch.compile on the CPU generates and builds C++ (gcc): ~10-30 s for the first tiny model on a
2-core machine, less once inductor's on-disk cache holds the kernels."""
import shutil

import pytest
import torch

from sslray.checkpoint import load_checkpoint
from sslray.config import load_config
from sslray.loop import run
from sslray.methods import build_method
from sslray.local_run import LocalReporter


pytestmark = pytest.mark.skipif(not any(map(shutil.which, ("g++", "c++", "clang++"))),
                                reason="torch.compile on the CPU builds its kernels with a C++ compiler; none found")


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()  # a compile here starts from nothing and leaves no cached frames behind
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def _run(raw, run_dir):
    cfg = load_config(raw)
    rep = LocalReporter(cfg, run_dir, None, echo=False)
    return cfg, run(cfg, rep), load_checkpoint(rep.last_checkpoint)


def test_compiled_training_matches_eager_and_saves_plain_keys(tiny_cfg, tmp_path, fresh_dynamo):
    # VICReg-TiCo: the loss also updates a buffer (TiCo's C) inside the compiled forward
    tiny_cfg["loss"] = {"name": "vicreg_tico", "params": {"nu": 0.01}}
    tiny_cfg["data"]["synthetic_train_size"] = 64  # 2 steps of 32
    tiny_cfg["train"]["epochs"] = 1
    # SGD: a weight's update is proportional to its gradient (Adam's first steps are about lr x the
    # gradient's sign, which rounding flips for gradients near 0), so the weights can be compared
    tiny_cfg["optim"] = {"name": "sgd", "lr": 0.5, "warmup_epochs": 0}
    _, eager, eager_ckpt = _run(tiny_cfg, tmp_path / "eager")
    tiny_cfg["train"]["compile"] = True
    cfg, compiled, ckpt = _run(tiny_cfg, tmp_path / "compiled")
    assert compiled["status"] == eager["status"] == "finished"
    assert "compiled" in (tmp_path / "compiled" / "log.txt").read_text()
    # one graph for the whole method: no graph break, no recompile between steps (each would cost
    # another compile; torch's own counter, as its tests read it)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    for key, value in eager["metrics"].items():
        if key.startswith(("loss", "probe_loss")):
            assert compiled["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # the checkpoint is the method's own state_dict: same keys as the eager run's, none of the
    # compiled wrapper's, and it loads strictly into a method that was never compiled
    assert set(ckpt["model"]) == set(eager_ckpt["model"])
    assert not any("_orig_mod" in k for k in ckpt["model"])
    fresh = build_method(cfg, ckpt["num_classes"])
    fresh.load_state_dict(ckpt["model"])
    for name, tensor in fresh.state_dict().items():
        torch.testing.assert_close(tensor, eager_ckpt["model"][name], rtol=1e-4, atol=1e-5, msg=name)
