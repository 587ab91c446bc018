"""How a trial ended, decided in one place from its last result.

Tune's stopper, the Optuna study, the MLflow record and the summary all call :func:`trial_outcome`
on the same last result, so they cannot disagree:

    finished   ran all train.epochs
    <name>     stopped by the scheduler plug-in of that name before train.epochs ("asha": at a
               rung); its reason is the plug-in's ("stopped by ASHA at epoch 2")
    collapsed  embeddings collapsed (RankMe or embedding-std ratio under search.stop's thresholds)
    diverged   the loss went non-finite
    failed     the trial raised (data, out of memory, a dead worker after its retries)
"""
from __future__ import annotations

import math
from typing import Any

OUTCOMES = ("finished", "asha", "collapsed", "diverged", "failed")  # and any scheduler's name (search.schedulers)


def collapse_reason(stop, result: dict[str, Any]) -> str | None:
    """Why a result means the trial must stop (divergence or collapse), or None."""
    if result.get("status") == "diverged":
        return result.get("reason") or "non-finite loss"
    rankme, ratio = result.get("rankme", math.inf), result.get("emb_std_ratio", math.inf)
    if stop.rankme_below is not None and rankme < stop.rankme_below:
        return f"collapse: RankMe {rankme:.2f} < {stop.rankme_below} at epoch {result.get('epoch')}"
    if stop.emb_std_ratio_below is not None and ratio < stop.emb_std_ratio_below:
        return f"collapse: embedding std ratio {ratio:.3f} < {stop.emb_std_ratio_below} at epoch {result.get('epoch')}"
    return None


def trial_outcome(space, last: dict[str, Any] | None, error: bool = False) -> tuple[str, str]:
    """(outcome, reason) of a trial from its last result."""
    if error:
        return "failed", "error: see the trial's log"
    last = last or {}
    reason = collapse_reason(space.stop, last)
    if reason:
        return ("diverged" if last.get("status") == "diverged" else "collapsed"), reason
    epoch = int(last.get("epoch") or 0)
    if epoch < space.max_epochs:
        return space.scheduler.name, space.scheduler.stop_reason(epoch)
    return "finished", f"ran all {space.max_epochs} epochs"
