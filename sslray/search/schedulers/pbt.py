"""``pbt``: Population Based Training (Ray's PopulationBasedTraining, ``time_attr=epoch``) over
the searched loss weights and optimiser values.

Every ``perturbation_interval`` epochs the population is ranked by the metric; a trial in the
bottom ``quantile_fraction`` goes on from the latest checkpoint of a random top trial, with that
trial's values perturbed (x ``perturbation_factors``, or redrawn from the range with probability
``resample_probability``) and clamped to the searched range -- the range is what the file
validated, so a perturbed value is always a valid config. ``synch: true`` (the default, the PBT
paper's Appendix A.1) ranks the whole population at the same epoch, so an exploited trial goes on
from the epoch it stopped at and no epoch is trained twice; a population larger than
``max_concurrent`` is time-multiplexed by pausing at the boundaries.

How it fits (REFERENCE §12b):
  * A trial is exploited through its Tune checkpoint: only the one-worker in-trial trainable
    reports one (Ray Train's report callback never does), so a space whose trials have
    ``scale.workers != 1`` is refused.
  * The whole population is started at once: how many train at a time is what the cluster holds
    (trial resources), not ``max_concurrent`` -- a generator capped at fewer trials than the
    population would never start the trials a synchronous boundary waits for.
  * Ray refuses PBT beside a search algorithm (``OptunaSearch``): the Optuna study proposes the
    initial population before Tune starts (``ask``, ``points_to_evaluate`` first, then TPE's
    startup sampling) and Tune runs those points through its BasicVariantGenerator. The study then
    records every *segment* of every trial (search.population): one Optuna trial per stretch of
    epochs trained with one set of values.
  * The exploited trial's function restarts with the new values in its config and the clone's
    checkpoint; the loop resumes from it with the new lr and loss weights (sslray.loop), and the
    checkpoint carries the lineage (search.trainable), so MLflow, Optuna and the report say which
    trial inherited from which and what values each stretch ran with.
Searched parameters must be numbers (loguniform, uniform, int) that leave the architecture alone
(no ``when``, no choice): a perturbed value must load into the same network.

State across a restore: each trial's last score, perturbation and train times, and the next
synchronous boundary; checkpoints are taken again at the next boundary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ray.tune.schedulers import PopulationBasedTraining

from sslray.config import ConfigError, load_config
from sslray.search.outcome import collapse_reason
from sslray.search.schedulers.base import Scheduler, Sound, in_range

PERTURBABLE = ("loguniform", "uniform", "int")


@dataclass
class PbtConfig:
    perturbation_interval: int = 2  # epochs between two rankings
    quantile_fraction: float = 0.25  # bottom / top share of the population, in (0, 0.5]
    resample_probability: float = 0.25  # a fresh draw from the range instead of a factor
    perturbation_factors: list = field(default_factory=lambda: [1.2, 0.8])
    synch: bool = True  # rank the whole population at the same epoch


def domain(p):
    """The Tune domain of a numeric searched parameter (PBT's resampling draws from it)."""
    from ray import tune

    if p.dist == "int":
        return tune.randint(int(p.low), int(p.high) + 1)
    return (tune.loguniform if p.dist == "loguniform" else tune.uniform)(p.low, p.high)


class Clamp:
    """PBT's explore step multiplies a value by a factor: keep it inside the searched range (and an
    integer for dist=int). A module-level class: Tune pickles the scheduler."""

    def __init__(self, params):
        self.bounds = {p.path: (p.low, p.high, p.dist == "int") for p in params}

    def __call__(self, config: dict) -> dict:
        for path, (low, high, integer) in self.bounds.items():
            if path in config:
                v = min(max(config[path], low), high)
                config[path] = int(round(v)) if integer else float(v)
        return config


class SoundPBT(Sound, PopulationBasedTraining):
    def __init__(self, stop, max_t: int, **kwargs):
        super().__init__(stop, **kwargs)
        self.max_t = max_t  # train.epochs: a trial's last result ends it, nothing to exploit
        self.restored: dict[str, dict] = {}  # trial id -> saved state, applied when Tune adds it back

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if int(result.get("epoch", 0)) >= self.max_t and not collapse_reason(self.stop, result):
            return self.CONTINUE  # the trial ends here: cloning into it would only replace its result
        return super().on_trial_result(tune_controller, trial, result)

    def forget(self, trial) -> None:
        state = self._trial_state.get(trial)
        if state is not None:  # never ranked, never cloned
            state.last_score, state.last_checkpoint = None, None

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self.release_waiting(tune_controller, ended=trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        super().on_trial_remove(tune_controller, trial)
        self.release_waiting(tune_controller, ended=trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        super().on_trial_error(tune_controller, trial)
        self.release_waiting(tune_controller, ended=trial)

    def release_waiting(self, tune_controller, ended) -> None:
        """Synchronous PBT ranks the population when the last live trial reports at the boundary. A
        trial that ends before it (collapsed, diverged, failed, or stopped at its last epoch) never
        reports there, and Ray's PBT would keep the others paused at the boundary for ever (its
        choose_trial_to_run only starts trials behind it). Rank them now, as that report would have."""
        if not self._synch:
            return
        waiting = [t for t in tune_controller.get_live_trials() if t is not ended and t in self._trial_state]
        if not waiting or any(self._trial_state[t].last_train_time < self._next_perturbation_sync for t in waiting):
            return
        lower, upper = self._quantiles()
        for t in upper + [t for t in waiting if t not in upper and t not in lower] + lower:
            self._trial_state[t].last_perturbation_time = self._trial_state[t].last_train_time
            self._checkpoint_or_exploit(t, tune_controller, upper, lower)
        self._next_perturbation_sync = max(self._next_perturbation_sync + self._perturbation_interval,
                                           max(self._trial_state[t].last_train_time for t in waiting))

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        saved = self.restored.pop(trial.trial_id, None)
        if saved:
            state = self._trial_state[trial]
            for k, v in saved.items():
                setattr(state, k, v)


class Pbt(Scheduler):
    name, label, Settings = "pbt", "PBT", PbtConfig
    stops_trials = False
    limits_concurrency = False  # a capped generator never starts the trials a paused one waits for

    def check(self, space) -> None:
        s, where = self.settings, self.where
        workers = space.base["scale"].get("workers", 1)
        if workers != 1:
            raise ConfigError(f"{where}.name: pbt goes on from another trial's Tune checkpoint, which a Ray Train "
                              f"trial (scale.workers={workers}) never reports; allowed: scale.workers=1, or "
                              "scheduler fifo or asha")
        if isinstance(s.perturbation_interval, bool) or not 1 <= s.perturbation_interval < space.max_epochs:
            raise ConfigError(f"{where}.perturbation_interval: {s.perturbation_interval} is out of range; "
                              f"allowed: [1, train.epochs - 1 = {space.max_epochs - 1}]")
        in_range(f"{where}.quantile_fraction", s.quantile_fraction, 0, 0.5, "(0, 0.5]", low_open=True)
        in_range(f"{where}.resample_probability", s.resample_probability, 0, 1, "[0, 1]")
        f = s.perturbation_factors
        if not (len(f) >= 1 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in f)):
            raise ConfigError(f"{where}.perturbation_factors: {f!r} is not usable; allowed: a list of positive "
                              "numbers, e.g. [1.2, 0.8]")
        if not isinstance(s.synch, bool):
            raise ConfigError(f"{where}.synch: {s.synch!r} has the wrong type; allowed: true, false")
        if space.num_trials < 2:
            raise ConfigError(f"search.num_trials: {space.num_trials} is too few for pbt; allowed: >= 2 "
                              "(a population to rank)")
        from sslray.checkpoint import architecture

        shape = architecture(load_config(space.base))
        for p in space.params:
            if p.dist not in PERTURBABLE or p.when or p.path in shape or p.path.split(".")[0] not in ("loss", "optim"):
                raise ConfigError(f"search.params.{p.path}: pbt changes every searched value in the middle of a "
                                  "run, so each must be a loss weight or optimiser number that keeps the architecture; "
                                  f"allowed: loss.params.* or optim.* with dist {', '.join(PERTURBABLE)}, no when")

    def make(self, space) -> SoundPBT:
        s = self.settings
        return SoundPBT(space.stop, space.max_epochs, time_attr="epoch", perturbation_interval=s.perturbation_interval,
                        hyperparam_mutations={p.path: domain(p) for p in space.params},
                        quantile_fraction=s.quantile_fraction, resample_probability=s.resample_probability,
                        perturbation_factors=tuple(s.perturbation_factors), custom_explore_fn=Clamp(space.params),
                        log_config=True, require_attrs=False, synch=s.synch)

    def milestones(self, max_t: int) -> list[int]:
        i = self.settings.perturbation_interval
        return list(range(i, max_t, i))

    def num_to_keep(self, keep: int) -> int:
        return max(keep, 3)  # Ray warns <= 2: a checkpoint may go before another trial clones it

    def worst_case_trial_epochs(self, space) -> int:
        """Synchronous PBT trains every epoch of every trial once; asynchronous PBT may train an epoch
        again (a trial cloned from one behind it), at most one interval per exploit."""
        n, e = space.num_trials, space.max_epochs
        if self.settings.synch:
            return n * e
        exploits = math.ceil(n * self.settings.quantile_fraction) * len(self.milestones(e))
        return n * e + exploits * self.settings.perturbation_interval

    def get_state(self, scheduler: SoundPBT) -> dict:
        keep = ("last_score", "last_perturbation_time", "last_train_time", "last_result")
        trials = {t.trial_id: {k: getattr(s, k) for k in keep} for t, s in scheduler._trial_state.items()}
        return {"trials": trials, "next_sync": scheduler._next_perturbation_sync,
                "num_perturbations": scheduler._num_perturbations}

    def set_state(self, scheduler: SoundPBT, state: dict) -> None:
        scheduler.restored = dict(state["trials"])
        scheduler._next_perturbation_sync = state["next_sync"]
        scheduler._num_perturbations = state["num_perturbations"]

    def inheritance(self, exp_dir, name: str) -> list[dict]:
        from sslray.search.population import lineage

        return lineage(exp_dir, name)

    def searcher(self, space, exp_dir, name: str):
        from ray.tune.search import BasicVariantGenerator

        from sslray.search.population import PopulationStudy, ask_population

        points = ask_population(space, exp_dir, name)
        search_alg = BasicVariantGenerator(points_to_evaluate=[params for _, params in points])
        return search_alg, {p.path: domain(p) for p in space.params}, [PopulationStudy(space, exp_dir, name, points)]
