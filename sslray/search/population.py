"""The Optuna study of a PBT search: the initial population, and one Optuna trial per segment.

Ray refuses PBT beside a search algorithm (REFERENCE §12b), so Optuna cannot drive the trials
through Tune. Instead:

* :func:`ask_population` asks the study for ``num_trials`` configurations before Tune starts
  (``points_to_evaluate`` first, then TPE's startup sampling with its seed); Tune runs exactly
  those through its BasicVariantGenerator.
* :class:`PopulationStudy` (a Tune callback on the driver) records what ran. A *segment* is a
  stretch of epochs a Tune trial trained with one set of values. The first segment is the asked
  Optuna trial; when PBT exploits a trial, the trial's reports name a new ``segment_parent`` (the
  trial whose checkpoint it went on from) and ``segment_start`` (that checkpoint's epoch:
  search.trainable), and the study gets a new Optuna trial with the new values
  (user attributes ``tune_trial_id``, ``segment``, ``parent_trial``, ``start_epoch``). The segment
  it replaces ends PRUNED (outcome ``exploited``, with the scores it reached); the last segment
  of each trial ends by the trial's outcome (search.outcome): finished -> COMPLETE with its final
  score, collapsed / diverged -> PRUNED, an error -> FAIL. Intermediate values are the epochs a
  segment itself trained (> start_epoch), so each Optuna trial's values and scores are what ran.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sslray.search.outcome import trial_outcome

EXPLOITED = "exploited"


def _storage(exp_dir: Path):
    import optuna

    return optuna.storages.RDBStorage(f"sqlite:///{Path(exp_dir) / 'optuna.db'}")


def ask_population(space, exp_dir: Path, name: str) -> list[tuple[int, dict[str, Any]]]:
    """(Optuna trial number, values) of the initial population, asked from a fresh study."""
    import optuna
    from optuna.samplers import TPESampler

    from sslray.search.study import optuna_storage, suggest

    o = space.optuna
    study = optuna.create_study(storage=optuna_storage(Path(exp_dir), name, fresh=True), study_name=name,
                                direction="maximize" if space.mode == "max" else "minimize",
                                sampler=TPESampler(seed=o.seed, n_startup_trials=o.n_startup_trials))
    study.set_user_attr("metric", space.metric)
    study.set_user_attr("scheduler", "pbt")
    for point in o.points_to_evaluate[:space.num_trials]:
        study.enqueue_trial(point)
    out = []
    for _ in range(space.num_trials):
        trial = study.ask()
        values = {p.path: suggest(trial, p) for p in space.params}
        trial.set_user_attr("segment", 0)
        out.append((trial.number, values))
    return out


def new_segment(current: dict[str, Any], result: dict[str, Any]) -> bool:
    """Whether a result is the first of a new segment: it names a checkpoint it went on from
    (``segment_parent`` at ``segment_start``) other than the current segment's."""
    parent = result.get("segment_parent")
    return parent is not None and (parent, int(result.get("segment_start", 0))) != (current["parent"], current["start"])


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return set(a) == set(b) and all(math.isclose(float(a[k]), float(b[k]), rel_tol=1e-12) for k in a)


class PopulationStudy(Callback):
    def __init__(self, space, exp_dir: Path, name: str, asked: list[tuple[int, dict[str, Any]]]):
        self.space, self.exp_dir, self.name = space, str(exp_dir), name
        self.pending = list(asked)  # asked, not yet matched to a Tune trial
        self.current: dict[str, dict[str, Any]] = {}  # Tune trial id -> {number, segment, start, reported}
        self._study = None

    def __getstate__(self):
        return {**self.__dict__, "_study": None}  # pickled with Tune's state: no open storage

    @property
    def study(self):
        import optuna

        if self._study is None:
            self._study = optuna.load_study(study_name=self.name, storage=_storage(Path(self.exp_dir)))
        return self._study

    def _trial(self, number: int):
        import optuna

        frozen = self.study._storage.get_trial(self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number))
        return optuna.trial.Trial(self.study, frozen._trial_id)

    def _segment(self, trial) -> dict[str, Any] | None:
        seg = self.current.get(trial.trial_id)
        if seg is None:
            match = next((i for i, (_, values) in enumerate(self.pending) if _same(values, trial.config)), None)
            if match is None:
                return None
            number, _ = self.pending.pop(match)
            self._trial(number).set_user_attr("tune_trial_id", trial.trial_id)
            seg = self.current[trial.trial_id] = {"number": number, "segment": 0, "parent": None, "start": 0,
                                                  "reported": 0}
        return seg

    def on_trial_start(self, iteration, trials, trial, **info):
        self._segment(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        seg = self._segment(trial)
        if seg is None:
            return
        if new_segment(seg, result):
            seg = self._next_segment(trial, seg, seg["segment"] + 1, result)
        value, epoch = result.get(self.space.metric), int(result.get("epoch") or 0)
        if isinstance(value, (int, float)) and math.isfinite(value) and epoch > max(seg["reported"], seg["start"]):
            self._trial(seg["number"]).report(float(value), epoch)
            seg["reported"] = epoch

    def _next_segment(self, trial, seg: dict, k: int, result: dict) -> dict:
        from optuna.trial import TrialState

        from sslray.search.study import suggest

        start, parent = int(result.get("segment_start", 0)), result.get("segment_parent")
        old = self._trial(seg["number"])
        old.set_user_attr("outcome", EXPLOITED)
        old.set_user_attr("reason", f"exploited at epoch {start}: went on from trial {parent}'s checkpoint with "
                                    f"new values (segment {k})")
        self.study.tell(seg["number"], state=TrialState.PRUNED)
        self.study.enqueue_trial(dict(trial.config))
        new = self.study.ask()
        for p in self.space.params:
            suggest(new, p)  # the enqueued (clamped, in-range) values
        for key, v in (("tune_trial_id", trial.trial_id), ("segment", k), ("parent_trial", parent), ("start_epoch", start)):
            new.set_user_attr(key, v)
        seg = self.current[trial.trial_id] = {"number": new.number, "segment": k, "parent": parent, "start": start,
                                              "reported": start}
        return seg

    def _end(self, trial, error: bool) -> None:
        from optuna.trial import TrialState

        seg = self._segment(trial)
        if seg is None or self.study._storage.get_trial(self._trial(seg["number"])._trial_id).state.is_finished():
            return
        outcome, reason = trial_outcome(self.space, trial.last_result, error)
        t = self._trial(seg["number"])
        t.set_user_attr("outcome", outcome)
        t.set_user_attr("reason", reason)
        value = (trial.last_result or {}).get(self.space.metric)
        if outcome == "finished" and isinstance(value, (int, float)) and math.isfinite(value):
            self.study.tell(seg["number"], float(value), state=TrialState.COMPLETE)
        else:
            self.study.tell(seg["number"], state=TrialState.FAIL if outcome == "failed" else TrialState.PRUNED)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, error=True)

    def get_state(self) -> dict:
        return {"pending": self.pending, "current": self.current}

    def set_state(self, state: dict) -> None:
        self.pending, self.current = state["pending"], state["current"]


def lineage(exp_dir: Path, name: str) -> list[dict[str, Any]]:
    """Every inherited segment of a PBT search, from its study: which trial went on from which
    trial's checkpoint, at which epoch, with which values (empty for other schedulers)."""
    import optuna

    study = optuna.load_study(study_name=name, storage=_storage(exp_dir))
    rows = [{"trial": t.user_attrs.get("tune_trial_id"), "segment": t.user_attrs["segment"],
             "parent": t.user_attrs.get("parent_trial"), "from_epoch": t.user_attrs.get("start_epoch"),
             "values": t.params, "optuna_trial": t.number, "outcome": t.user_attrs.get("outcome")}
            for t in study.get_trials(deepcopy=False) if t.user_attrs.get("segment", 0) > 0]
    return sorted(rows, key=lambda r: (r["from_epoch"], r["trial"] or "", r["segment"]))
