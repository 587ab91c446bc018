"""ASHA that does not let an unstable trial set the bar.

Ray's ASHA records a trial's score at each rung it reaches and stops a later trial whose score at
that rung falls below the top 1/eta of those recorded. A trial that later diverges (non-finite
loss) or collapses keeps its recorded scores -- and a high learning rate often leads early and
blows up later. Measured on the quickstart (CIFAR-10, 50,000 images): a trial with lr 0.44 led at
epoch 2 with 49.1 % kNN, diverged at epoch 8, and its epoch-2 score stopped the paper's weights
(43.7 % at epoch 2) before they could run to 61 %. Here a trial stopped for divergence or collapse
(search.outcome.collapse_reason) is removed from every rung: later trials are compared with the
trials that stayed sound.
"""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from sslray.search.outcome import collapse_reason


class SoundASHA(ASHAScheduler):
    def __init__(self, stop, **kwargs):
        super().__init__(**kwargs)
        self.stop = stop  # the search's collapse thresholds (SearchSpace.stop)

    def forget(self, trial_id: str) -> None:
        for bracket in self._brackets:
            for _, recorded in bracket._rungs:  # Ray 2.60's _Bracket: [(milestone, {trial_id: score})]
                recorded.pop(trial_id, None)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if collapse_reason(self.stop, result):
            self.forget(trial.trial_id)
            return TrialScheduler.STOP
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result is not None and collapse_reason(self.stop, result):
            self.forget(trial.trial_id)
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)
