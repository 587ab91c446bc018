"""``asha``: asynchronous successive halving (Ray's ASHAScheduler, ``time_attr=epoch``,
``max_t=train.epochs``), that does not let an unstable trial set the bar, and that keeps its rungs
across a restored search.

Ray's ASHA records a trial's score at each rung it reaches and stops a later trial whose score at
that rung falls below the top 1/eta of those recorded. A trial that later diverges (non-finite
loss) or collapses keeps its recorded scores -- and a high learning rate often leads early and
blows up later. Measured on the quickstart (CIFAR-10, 50,000 images): a trial with lr 0.44 led at
epoch 2 with 49.1 % kNN, diverged at epoch 8, and its epoch-2 score stopped the paper's weights
(43.7 % at epoch 2) before they could run to 61 %. Here a trial stopped for divergence or collapse
(search.outcome.collapse_reason) is removed from every rung: later trials are compared with the
trials that stayed sound.

``--plan``: the rungs are ``grace * eta**k`` below train.epochs; the expected spend follows
synchronous successive halving, ``ceil(N / eta**k)`` trials reaching rung ``k``. Asynchronous ASHA
promotes somewhat more (early trials face a thinner field), so read it as the typical figure.

State: the rungs' recorded scores, ``{milestone: {trial id: score}}`` per bracket (REFERENCE §12a:
without it, a resumed search's rungs start empty and the first trials to reach them always pass).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ray.tune.schedulers import ASHAScheduler

from sslray.config import ConfigError
from sslray.search.outcome import collapse_reason
from sslray.search.schedulers.base import Scheduler, Sound


@dataclass
class AshaConfig:
    grace_period: int = 10
    reduction_factor: float = 3.0


class SoundASHA(Sound, ASHAScheduler):
    def forget(self, trial) -> None:
        for bracket in self._brackets:
            for _, recorded in bracket._rungs:  # Ray 2.60's _Bracket: [(milestone, {trial_id: score})]
                recorded.pop(trial.trial_id, None)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        if result is not None and collapse_reason(self.stop, result):
            self._trial_info.pop(trial.trial_id, None)  # ASHA's own on_trial_complete was skipped


class Asha(Scheduler):
    name, label, Settings = "asha", "ASHA", AshaConfig

    def check(self, space) -> None:
        s = self.settings
        if not 1 <= s.grace_period <= space.max_epochs:
            raise ConfigError(f"{self.where}.grace_period: {s.grace_period} is out of range; "
                              f"allowed: [1, train.epochs={space.max_epochs}]")
        if s.reduction_factor <= 1:
            raise ConfigError(f"{self.where}.reduction_factor: {s.reduction_factor} is out of range; allowed: > 1")

    def make(self, space) -> SoundASHA:
        return SoundASHA(space.stop, time_attr="epoch", max_t=space.max_epochs, grace_period=self.settings.grace_period,
                         reduction_factor=self.settings.reduction_factor)

    def milestones(self, max_t: int) -> list[int]:
        """Ray's ASHAScheduler rungs with one bracket, below max_t."""
        out, k = [], 0
        while (r := self.settings.grace_period * self.settings.reduction_factor ** k) < max_t:
            out.append(int(round(r)))
            k += 1
        return out

    def reach(self, space) -> list[int]:
        eta = self.settings.reduction_factor
        return [math.ceil(space.num_trials / eta ** k) for k in range(len(self.milestones(space.max_epochs)) + 1)]

    def get_state(self, scheduler: SoundASHA) -> dict:
        return {"rungs": [[[milestone, dict(recorded)] for milestone, recorded in b._rungs] for b in scheduler._brackets],
                "num_stopped": scheduler._num_stopped}

    def set_state(self, scheduler: SoundASHA, state: dict) -> None:
        for bracket, rungs in zip(scheduler._brackets, state["rungs"]):
            saved = {milestone: recorded for milestone, recorded in rungs}
            for milestone, recorded in bracket._rungs:
                recorded.clear()
                recorded.update(saved.get(milestone, {}))
        scheduler._num_stopped = state["num_stopped"]
