"""``fifo``: no early stopping. Every sound trial runs all train.epochs, so the Optuna study sees
full-length scores only; a diverged or collapsed trial is still stopped (collapse-awareness).
Ray's FIFOScheduler keeps no state: a restored search loses nothing (REFERENCE §12c)."""
from __future__ import annotations

from dataclasses import dataclass

from ray.tune.schedulers import FIFOScheduler

from sslray.search.schedulers.base import Scheduler, Sound


@dataclass
class FifoConfig:
    """FIFO takes no settings."""


class SoundFIFO(Sound, FIFOScheduler):
    """Ray's FIFO (every trial to its end) that still stops a diverged or collapsed trial."""


class Fifo(Scheduler):
    name, label, Settings = "fifo", "FIFO", FifoConfig
    stops_trials = False

    def describe(self) -> str:
        return "FIFO (no early stopping)"

    def make(self, space) -> FIFOScheduler:
        return SoundFIFO(space.stop)
