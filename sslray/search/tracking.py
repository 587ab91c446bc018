"""MLflow tracking of a search: one parent run, one nested run per trial.

A Tune callback on the driver writes, for each trial, every parameter (searched and fixed, as
dotted config paths), every reported epoch's metrics with ``step=epoch`` (each loss term,
kNN, probe, RankMe, throughput), and at the end its status and the reason it stopped (finished,
ASHA, collapse, non-finite loss, error). Child runs carry the Tune trial id as a tag, so a resumed
search finds and continues them instead of creating duplicates.
"""
from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback

from sslray.search.outcome import trial_outcome
from sslray.tracking import Tracker, tags

TRIAL_TAG = tags.TRIAL_ID


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted keys as the config's overrides and search paths spell them; a list of sections (crop
    groups) by index, ``views.crops.1.count``, so a searched group field is its own MLflow param."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            out.update(flatten({str(i): x for i, x in enumerate(v)}, key + "."))
        else:
            out[key] = v
    return out


class MLflowTrials(Callback):
    """Nested MLflow run per Tune trial (runs in the Tune driver process)."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, space, trials_dir: str):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.space, self.trials_dir = space, trials_dir
        self.run_ids: dict[str, str] = {}
        self.last_epoch: dict[str, int] = {}

    @property
    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri)

    def _run_id(self, trial) -> str:
        if trial.trial_id in self.run_ids:
            return self.run_ids[trial.trial_id]
        tracker = self.tracker
        found = tracker.find_runs([self.experiment_id], tags={TRIAL_TAG: trial.trial_id})
        if found:  # resumed search: continue the trial's run
            run_id = found[0].id
            self.last_epoch[trial.trial_id] = int(found[0].metrics.get("epoch", 0))
            if found[0].status == "KILLED":  # interrupted with the search; running again
                tracker.reopen(run_id)
        else:
            run_name, parent, config, extra = self.record(trial)
            run_id = tracker.start_run(self.experiment_id, run_name, {TRIAL_TAG: trial.trial_id, **extra}, parent=parent)
            tracker.log_params(run_id, flatten(config.to_dict()))
        self.run_ids[trial.trial_id] = run_id
        return run_id

    def record(self, trial) -> tuple[str, str, Any, dict[str, str]]:
        """(run name, parent run id, the exact config the trial runs, extra tags) of a new run."""
        from sslray.search.trainable import trial_config

        # exactly the config the trial runs: resolved space + sampled values + the search's settings
        config = trial_config(self.space, trial.config, self.trials_dir, trial.trial_id)
        return f"trial-{trial.trial_id}", self.parent_run_id, config, {tags.SEARCHED: ", ".join(trial.config)}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("segment_parent") is not None:
            self._segment(trial, result)
        epoch = int(result.get("epoch", 0))
        if epoch <= self.last_epoch.get(trial.trial_id, 0):
            return  # already logged (a resumed trial replays nothing twice)
        self.last_epoch[trial.trial_id] = epoch
        metrics = {k: float(v) for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and (k in _LOGGED or k.startswith("loss"))}
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        if metrics:
            self.tracker.log_metrics(self._run_id(trial), metrics, step=epoch, timestamp=result.get("timestamp", 0))
        ckpt = result.get("checkpoint_path") or (  # Ray Train's, or Tune's own of an in-trial loop
            result.get("checkpoint_dir_name") and f"{trial.path}/{result['checkpoint_dir_name']}")
        if ckpt:
            self.tracker.set_tags(self._run_id(trial), {tags.CHECKPOINT: ckpt})

    def _segment(self, trial, result: dict) -> None:
        """PBT: the trial went on from ``segment_parent``'s checkpoint of epoch ``segment_start`` with
        the values now in its config. The run's params stay its first segment's; each later segment is
        the tag ``tags.segment(start epoch)`` = {"parent": ..., "values": ...} (idempotent: a
        restored search writes the same tag again)."""
        import json

        start = int(result.get("segment_start", 0))
        tagged = self.__dict__.setdefault("segments", set())
        if (trial.trial_id, start) in tagged:
            return
        tagged.add((trial.trial_id, start))
        run_id = self._run_id(trial)
        self.tracker.set_tags(run_id, {tags.segment(start): json.dumps({"parent": result["segment_parent"],
                                                                        "values": dict(trial.config)})})
        # its epochs after ``start`` ran with the new values: logged even where an earlier segment logged them
        self.last_epoch[trial.trial_id] = min(self.last_epoch.get(trial.trial_id, 0), start)

    def _end(self, trial, status: str, reason: str) -> None:
        run_id = self._run_id(trial)
        tracker = self.tracker
        tracker.set_tags(run_id, {tags.OUTCOME: status, tags.STOP_REASON: reason})
        tracker.end_run(run_id, "FAILED" if status == "failed" else "FINISHED")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, *trial_outcome(self.space, trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info):
        where = getattr(trial, "error_file", "") or "see the trial log"
        self._end(trial, "failed", f"error: {where}")


_LOGGED = {"epoch", "lr", "img_per_s", "epoch_time_s", "eval_time_s", "knn_top1", "probe_top1", "probe_loss", "rankme",
           "rankme_rep", "emb_std", "emb_std_ratio"}


OUTCOME_WORDS = {"asha": "stopped by ASHA"}


def search_description(space, rows: list[dict], outcomes: dict[str, int], best: dict | None) -> str:
    """What the search found, in Markdown, for the top of the parent run's page."""
    counts = ", ".join(f"{n} {OUTCOME_WORDS.get(o, o)}" for o, n in sorted(outcomes.items(), key=lambda kv: -kv[1]))
    text = f"**{len(rows)} trials**: {counts}.\n\n"
    if best is None:
        return text + "No trial produced a checkpoint with a score."
    params = ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}" for k, v in best["params"].items())
    return text + (f"**Best {space.metric}: {best[space.metric]:.4f}** (trial {best['trial_id']}, "
                   f"{best['epochs']} epochs): {params}.")
