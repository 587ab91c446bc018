"""What a checkpoint holds is declared once (sslray.checkpoint.TrainingState) and all of it is read
back on resume -- the global random generators included."""
import typing

import torch

from sslray.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from sslray.config import load_config
from sslray.local_run import LocalReporter
from sslray.loop import run


class RngAtReport(LocalReporter):
    """Records torch's global generator state whenever the loop reports."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.states = []

    def report(self, metrics, checkpoint):
        self.states.append((metrics.get("epoch"), torch.get_rng_state()))
        super().report(metrics, checkpoint)


def test_a_checkpoint_holds_exactly_the_declared_training_state(tiny_cfg, tmp_path):
    cfg = load_config(tiny_cfg)
    rep = LocalReporter(cfg, tmp_path / "r", None, echo=False)
    run(cfg, rep)
    state = load_checkpoint(rep.last_checkpoint)
    assert set(state) == set(typing.get_type_hints(TrainingState)) | {"format"}
    assert set(state["rng"]) == {"torch"}  # no CUDA here: only the CPU generator
    assert state["rng"]["torch"].dtype == torch.uint8 and state["rng"]["torch"].numel() > 0


def test_resume_restores_the_global_generators(tiny_cfg, tmp_path):
    cfg = load_config(tiny_cfg)
    run(cfg, LocalReporter(cfg, tmp_path / "full", None, echo=False))
    ckpt_file = tmp_path / "full" / "checkpoints" / "epoch_0001.pt"
    ckpt = load_checkpoint(ckpt_file)
    # a generator state no fresh process could have at that point: what the resume must continue from
    marked = torch.Generator().manual_seed(1234).get_state()
    ckpt["rng"]["torch"] = marked
    save_checkpoint({k: v for k, v in ckpt.items() if k != "format"}, tmp_path / "marked.pt")
    rep = RngAtReport(cfg, tmp_path / "resumed", tmp_path / "marked.pt", echo=False)
    torch.manual_seed(0)
    run(cfg, rep)
    epoch, first = rep.states[0]  # the resumed epoch is reported again before training goes on
    assert epoch == 1 and torch.equal(first, marked)
