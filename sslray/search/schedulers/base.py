"""What every scheduler plug-in has: its settings, its Tune object, its milestones, its budget, its
stop reason, its state across a restore, and collapse-awareness.

A plug-in is one subclass of :class:`Scheduler` with a ``Settings`` dataclass (parsed from
``search.scheduler`` with one-line errors naming ``search.scheduler.<field>``) registered by name in
:mod:`sslray.search.schedulers`. The search (``search.run``), ``--plan`` (``search.plan``), the
outcome of a trial (``search.outcome``) and the report ask the plug-in; nothing else names a
scheduler.

Collapse-awareness (:class:`Sound`) is shared: a result whose loss went non-finite or whose
embeddings collapsed (``search.outcome.collapse_reason``) stops the trial and the plug-in forgets
it (``forget``): a diverged trial never sets ASHA's bar, and is never a trial PBT clones.

Resume (REFERENCE §12a): ``Tuner.restore`` brings back the scheduler pickled when the search
started -- Tune never saves a scheduler's state. :class:`SchedulerState` is a Tune callback that
holds the same scheduler object (both are unpickled from the same ``tuner.pkl``); Tune saves a
callback's ``get_state()`` with every experiment checkpoint and calls ``set_state()`` on restore
*before* the trials are added again, so the plug-in's ``get_state``/``set_state`` carry ASHA's
rungs (and PBT's per-trial times and scores) across a killed driver.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

from ray.tune import Callback
from ray.tune.schedulers import TrialScheduler

from sslray.config import ConfigError, settings_from
from sslray.search.outcome import collapse_reason


class Scheduler(abc.ABC):
    """One scheduler plug-in: ``name`` in the search-space file, ``label`` in messages."""

    name: ClassVar[str]
    label: ClassVar[str]
    Settings: ClassVar[type]
    stops_trials: ClassVar[bool] = True  # whether it ends trials before train.epochs
    # whether search.max_concurrent caps the trials Tune starts (PBT: no, the whole population is
    # started and time-multiplexed on the cluster's resources by pausing at its boundaries)
    limits_concurrency: ClassVar[bool] = True

    def __init__(self, settings: Any = None, where: str = "search.scheduler"):
        self.settings = settings if settings is not None else self.Settings()
        self.where = where  # the file's key its messages name (the older search.asha, or search.scheduler)

    # ---- the search-space file
    @classmethod
    def from_raw(cls, raw: dict[str, Any], where: str = "search.scheduler") -> "Scheduler":
        if raw and not dataclasses.fields(cls.Settings):
            raise ConfigError(f"{where}: {cls.name} takes no settings, got {', '.join(sorted(raw))}; "
                              f"allowed: {{name: {cls.name}}}")
        return cls(settings_from(cls.Settings, raw, where), where)

    def check(self, space) -> None:
        """Settings against the resolved space (train.epochs, scale, the searched parameters);
        ConfigError naming ``search.scheduler.<field>``."""

    def record(self) -> dict[str, Any]:
        """What space.json stores (a --resume must match it)."""
        return {"name": self.name, **dataclasses.asdict(self.settings)}

    # ---- the search
    @abc.abstractmethod
    def make(self, space) -> TrialScheduler:
        """The Tune scheduler of a search over ``space`` (collapse-aware: wrapped by Sound)."""

    def searcher(self, space, exp_dir, name: str) -> tuple[Any, dict | None, list[Callback]]:
        """(Tune search algorithm, param_space, more Tune callbacks) of a fresh search: by default
        Optuna's TPE through Tune (search.study), the study in ``<experiment>/optuna.db``."""
        from sslray.search.study import TruthfulOptunaSearch, optuna_storage

        return TruthfulOptunaSearch(space, storage=optuna_storage(exp_dir, name, fresh=True), study_name=name), None, []

    def milestones(self, max_t: int) -> list[int]:
        """The epochs at which it acts (ASHA's rungs, PBT's perturbation points)."""
        return []

    def describe(self) -> str:
        """One line for the report: the scheduler and its settings."""
        settings = ", ".join(f"{k.replace('_', ' ')} {v:g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                             for k, v in dataclasses.asdict(self.settings).items())
        return f"{self.label}" + (f" ({settings})" if settings else "")

    def stop_reason(self, epoch: int) -> str:
        return f"stopped by {self.label} at epoch {epoch}"

    def num_to_keep(self, keep: int) -> int:
        """How many checkpoints Tune keeps per in-trial run (train.keep_checkpoints by default)."""
        return keep

    # ---- --plan
    def reach(self, space) -> list[int]:
        """How many trials reach each milestone and the end (``milestones + [max_epochs]``)."""
        return [space.num_trials] * (len(self.milestones(space.max_epochs)) + 1)

    def expected_trial_epochs(self, space) -> int:
        stops = self.milestones(space.max_epochs) + [space.max_epochs]
        return sum(r * (stop - prev) for r, stop, prev in zip(self.reach(space), stops, [0] + stops[:-1]))

    def worst_case_trial_epochs(self, space) -> int:
        """No trial stopped early: every trial runs every epoch once."""
        return space.num_trials * space.max_epochs

    def inheritance(self, exp_dir, name: str) -> list[dict[str, Any]]:
        """Which trial went on from which trial's checkpoint (PBT's exploits); none by default."""
        return []

    # ---- state across a restored search (see SchedulerState)
    def get_state(self, scheduler: TrialScheduler) -> dict | None:
        return None

    def set_state(self, scheduler: TrialScheduler, state: dict) -> None:
        """Put back what get_state saved; a scheduler that keeps no state has nothing to put back."""


class Sound:
    """Mixin before a Ray scheduler class: a diverged or collapsed result stops the trial and the
    scheduler forgets it (``forget``), so it never sets a cut-off nor is copied."""

    def __init__(self, stop, **kwargs):
        super().__init__(**kwargs)
        self.stop = stop  # the search's collapse thresholds (SearchSpace.stop)

    def forget(self, trial) -> None:
        """Drop what the scheduler recorded of a diverged or collapsed trial (nothing for one that
        records no scores, such as FIFO)."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if collapse_reason(self.stop, result):
            self.forget(trial)
            return TrialScheduler.STOP
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result is not None and collapse_reason(self.stop, result):
            self.forget(trial)
            return
        super().on_trial_complete(tune_controller, trial, result)


class SchedulerState(Callback):
    """Saves the plug-in's state with Tune's experiment state and puts it back on restore."""

    def __init__(self, plugin: Scheduler, scheduler: TrialScheduler):
        self.plugin, self.scheduler = plugin, scheduler

    def get_state(self) -> dict | None:
        return self.plugin.get_state(self.scheduler)

    def set_state(self, state: dict) -> None:
        self.plugin.set_state(self.scheduler, state)


def in_range(where: str, value: float, low: float, high: float, allowed: str, low_open: bool = False) -> None:
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        raise ConfigError(f"{where}: {value} is out of range; allowed: {allowed}")
