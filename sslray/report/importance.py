"""Parameter importance from the search's Optuna study, and when not to believe it.

Optuna's evaluators use COMPLETE trials only, and under ASHA most trials are PRUNED: the importance
of the final score rests on the few trials that ran to the end. So a second estimate uses the score
*every* trial reached at ASHA's first rung (epoch = grace_period): an in-memory study with one
COMPLETE trial per trial that got there, valued at that epoch's intermediate value. It answers a
different question (what makes a trial good early, which is what ASHA selected on) and says so.

Two evaluators: PED-ANOVA (Optuna's default; compares the parameter density of the top 10 % of
trials with all of them: it needs >= 5 trials in that top 10 %, i.e. ~50 trials) and fANOVA (a
random forest fitted to the trials: with a handful of points its splits are noise). Below those
counts the report prints a warning next to the numbers.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PED_ANOVA_TOP = 0.1  # PedAnovaImportanceEvaluator's default target_quantile
PED_ANOVA_MIN_TOP = 5  # trials it wants in that top quantile (Optuna's docstring)
FANOVA_MIN = 30  # below this a 64-tree forest on the trials says little (our rule of thumb)


@dataclass
class Importance:
    """Importances on one target (the final score, or the first rung's)."""
    key: str  # "complete" | "rung"
    title: str
    n_trials: int  # trials the evaluators used
    ped_anova: dict[str, float] = field(default_factory=dict)
    fanova: dict[str, float] = field(default_factory=dict)
    missing: str | None = None  # why there are no numbers
    warning: str | None = None  # why the numbers are not to be trusted
    study: object = None  # the optuna Study they came from (for the plot)


@contextmanager
def quiet():
    """Optuna's ExperimentalWarning (visualization.matplotlib) and its own too-few-trials warnings:
    the report states the latter in words next to the numbers."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*(too small to compute importances|quantiles select the same).*")
        try:
            yield
        finally:
            optuna.logging.set_verbosity(level)


def load_study(folder: Path, name: str):
    """The search's persisted study, or None when there is none (yet)."""
    import optuna

    db = folder / "optuna.db"
    if not db.is_file():
        return None
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    if name not in {s.study_name for s in storage.get_all_studies()}:
        return None
    return optuna.load_study(study_name=name, storage=storage)


def rung_study(study, epoch: int):
    """An in-memory study: one COMPLETE trial per trial that reached ``epoch``, valued at its score there."""
    import optuna
    from optuna.trial import create_trial

    rung = optuna.create_study(direction=study.direction)
    for t in study.get_trials(deepcopy=False):
        value = t.intermediate_values.get(epoch)
        if value is not None and math.isfinite(value) and t.params:
            rung.add_trial(create_trial(params=t.params, distributions=t.distributions, value=value))
    return rung


def importances(folder: Path, name: str, grace_period: int, max_epochs: int, searched: list[str]) -> list[Importance]:
    """Importance of the final score (COMPLETE trials) and of the first rung's score (every trial)."""
    from optuna.trial import TrialState

    study = load_study(folder, name)
    if study is None:
        return [Importance("complete", "Final score (COMPLETE trials)", 0,
                           missing=f"no Optuna study named {name!r} in {folder / 'optuna.db'}")]
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    out = [_evaluate("complete", f"Final score at epoch {max_epochs} (COMPLETE trials only)", study, len(complete),
                     searched)]
    with quiet():  # no "A new study created in memory" line
        rung = rung_study(study, grace_period)
    title = f"Score at ASHA's first rung, epoch {grace_period} (every trial that reached it)"
    if grace_period >= max_epochs:
        title += ": the first rung is the last epoch, so this is the final score again, PRUNED trials included"
    out.append(_evaluate("rung", title, rung, len(rung.trials), searched))
    return out


def _evaluate(key: str, title: str, study, n: int, searched: list[str]) -> Importance:
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    imp = Importance(key, title, n, study=study)
    if len(searched) < 2:
        imp.missing = (f"only one parameter is searched ({', '.join(searched) or 'none'}): importance ranks "
                       "parameters against each other, so with one it is 1.0 by definition")
        return imp
    if n < 2:
        imp.missing = f"{n} usable trial{'s' * (n != 1)}: importance needs at least 2 (with different scores)"
        return imp
    with quiet():
        try:
            imp.ped_anova = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
            imp.fanova = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
        except (ValueError, RuntimeError) as e:  # e.g. no parameter common to every trial (conditional spaces)
            imp.missing = f"Optuna could not compute it ({' '.join(str(e).split())})"
            return imp
    top = math.ceil(PED_ANOVA_TOP * n)
    if top < PED_ANOVA_MIN_TOP or n < FANOVA_MIN:
        imp.warning = (f"only {n} trials: too few to trust these numbers. PED-ANOVA compares the top "
                       f"{PED_ANOVA_TOP:.0%} of trials ({top} here) with all of them and wants at least "
                       f"{PED_ANOVA_MIN_TOP} there (~50 trials); fANOVA fits a random forest to the trials and "
                       f"needs a few dozen ({FANOVA_MIN}+) to say more than noise.")
    return imp
