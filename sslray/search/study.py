"""The search's Optuna study: define-by-run sampling, and the truth about every trial.

Ray Tune's ``OptunaSearch`` tells Optuna that an ASHA-stopped trial is COMPLETE with its rung's
value, so TPE ranks a 2-epoch score against full-length finals, and a NaN score leaves the Optuna
trial RUNNING for ever. :class:`TruthfulOptunaSearch` reports every epoch's score as an
intermediate value (step = epoch, which survives a restore; Tune's training_iteration does not)
and ends each trial by its outcome (:mod:`sslray.search.outcome`):

    finished                    COMPLETE, value = the last epoch's score
    asha (any scheduler's stop),
    collapsed, diverged         PRUNED, with the scores it reached as intermediate values
    failed                      FAIL

Why PRUNED for collapsed and diverged rather than FAIL: TPE ignores FAIL trials entirely, so it
would keep sampling the weights that collapse; PRUNED trials stay in TPE's "worse" group (ranked
below every COMPLETE trial, by how far they got), which steers sampling away from those regions.
An error (data, a dead worker) says nothing about the weights: FAIL. Each trial's outcome, reason
and Tune trial id are user attributes, so the study and MLflow can be joined.

The study lives in ``<experiment>/optuna.db`` (SQLite): ``optuna.load_study(study_name=NAME,
storage="sqlite:///.../optuna.db")`` or ``optuna-dashboard sqlite:///.../optuna.db``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.search.optuna import OptunaSearch

from sslray.search.outcome import trial_outcome

if TYPE_CHECKING:  # annotations only: the space module loads the schedulers, whose searcher is this
    from sslray.search.space import ParamSpec, SearchSpace


def suggest(trial, p: ParamSpec) -> Any:
    if p.dist == "choice":
        return trial.suggest_categorical(p.path, p.values)
    if p.dist == "int":
        return trial.suggest_int(p.path, int(p.low), int(p.high))
    return trial.suggest_float(p.path, p.low, p.high, log=p.dist == "loguniform")


class DefineByRun:
    """Samples a search space in its order; a conditional parameter only when its condition holds.
    (A module-level class, not a closure: Tune pickles the searcher with its state.)"""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial) -> None:
        chosen: dict[str, Any] = {}
        for p in self.space.params:
            if p.active(chosen, self.space.base):
                chosen[p.path] = suggest(trial, p)
        return None  # OptunaSearch takes the suggested values as the trial's config


class TruthfulOptunaSearch(OptunaSearch):
    def __init__(self, space: SearchSpace, storage=None, study_name: str | None = None):
        from optuna.samplers import TPESampler

        o = space.optuna
        # group=True lets multivariate TPE model conditional spaces (each group of parameters that
        # occur together); it is experimental in Optuna 5, so only used when the space needs it.
        sampler = TPESampler(seed=o.seed, n_startup_trials=o.n_startup_trials, group=space.conditional)
        super().__init__(space=DefineByRun(space), metric=space.metric, mode=space.mode,
                         points_to_evaluate=o.points_to_evaluate or None, sampler=sampler,
                         study_name=study_name, storage=storage)
        self.search_space = space
        self._reported: dict[str, int] = {}  # trial id -> last epoch told to Optuna
        self._ot_study.set_user_attr("metric", space.metric)

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if config is not None:
            self._ot_trials[trial_id].set_user_attr("tune_trial_id", trial_id)
        return config

    def _report(self, trial_id: str, result: dict | None) -> None:
        value, epoch = (result or {}).get(self.metric), (result or {}).get("epoch")
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not epoch:
            return  # a diverged epoch has no score: nothing to report, never NaN
        if int(epoch) > self._reported.get(trial_id, 0):  # a resumed trial re-reports its last epoch
            self._ot_trials[trial_id].report(float(value), int(epoch))
            self._reported[trial_id] = int(epoch)

    def _told(self, trial_id: str) -> bool:
        """Whether Optuna already has this trial's verdict. After a driver crash, Tune restores this
        searcher as it was at its last experiment checkpoint, so a trial told to Optuna just before
        the crash comes back with results and a completion: Optuna keeps its first verdict (it
        refuses updates to a finished trial). One SQLite read per result."""
        if trial_id in self._completed_trials:
            return True
        ot_trial = self._ot_trials[trial_id]
        if self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            self._completed_trials.add(trial_id)
            return True
        return False

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and not self._told(trial_id):
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or self._told(trial_id):
            return
        self._report(trial_id, result)  # the result that made ASHA or the stopper end it
        outcome, reason = trial_outcome(self.search_space, result, error)
        ot_trial.set_user_attr("outcome", outcome)
        ot_trial.set_user_attr("reason", reason)
        value = (result or {}).get(self.metric)
        if outcome == "finished" and isinstance(value, (int, float)) and math.isfinite(value):
            state, value = TrialState.COMPLETE, float(value)
        elif outcome != "failed":  # stopped by the scheduler, collapsed or diverged
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.FAIL, None
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)


def optuna_storage(exp_dir: Path, name: str, fresh: bool):
    """The study's SQLite storage in the experiment folder; a fresh search drops a stale study of
    the same name (left by a search that died before Tune saved any state)."""
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{exp_dir / 'optuna.db'}")
    if fresh and name in {s.study_name for s in storage.get_all_studies()}:
        optuna.delete_study(study_name=name, storage=storage)
    return storage
