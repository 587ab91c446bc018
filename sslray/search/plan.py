"""What a search costs before it runs: the scheduler's milestones and the trial-epochs it allows.

``python -m sslray.tune SPACE.yaml --plan [--epoch-seconds S]`` prints this and starts nothing.
The scheduler plug-in (search.schedulers) gives its milestones (ASHA's rungs, PBT's perturbation
epochs), how many trials reach each (``reach``) and its worst case. For ASHA the expected spend
follows synchronous successive halving (``ceil(N / eta**k)`` trials reach rung ``k``); FIFO and
PBT stop no sound trial, so their spend is ``N * epochs``. Collapse and NaN stops only lower it.
"""
from __future__ import annotations

from typing import Any

from sslray.search.space import SearchSpace


def rungs(space: SearchSpace) -> list[int]:
    """The epochs at which the scheduler acts (ASHA's rungs: Ray's ASHAScheduler with one bracket)."""
    return space.scheduler.milestones(space.max_epochs)


def budget(space: SearchSpace, epoch_seconds: float | None = None) -> dict[str, Any]:
    """Trial-epochs with the scheduler (expected) and in the worst case, and GPU-hours when the time
    of one epoch of one trial (training + its evaluation) is given. Keys name the scheduler:
    ``trial_epochs_asha``, ``gpu_hours_asha`` ... (``trial_epochs_all``: the worst case)."""
    plugin = space.scheduler
    n, stops = space.num_trials, rungs(space) + [space.max_epochs]
    name = plugin.name
    out = {"trials": n, "max_concurrent": space.max_concurrent, "epochs": space.max_epochs, "scheduler": name,
           "label": plugin.label, "stops_trials": plugin.stops_trials,
           "rungs": stops[:-1], "trials_reaching": dict(zip(stops, plugin.reach(space))),
           f"trial_epochs_{name}": plugin.expected_trial_epochs(space),
           "trial_epochs_all": plugin.worst_case_trial_epochs(space),
           "ray_train": space.base["scale"].get("workers", 1) >= 2}
    if epoch_seconds:
        gpus = _gpus_per_trial(space)
        for key in (name, "all"):
            hours = out[f"trial_epochs_{key}"] * epoch_seconds / 3600
            out[f"gpu_hours_{key}"] = round(hours * gpus, 1)
            # max_concurrent slots at best, and never less than one trial run to the end
            out[f"wall_hours_{key}"] = round(max(hours / max(1, space.max_concurrent),
                                                 space.max_epochs * epoch_seconds / 3600), 2)
        out["gpus_at_once"] = gpus * space.max_concurrent
    return out


def _gpus_per_trial(space: SearchSpace) -> int:
    s = space.base["scale"]
    return int(s["workers"] * s["gpus_per_worker"]) if s.get("use_gpu") else 0


WHAT = {"asha": "rungs", "pbt": "perturbations"}  # what a plug-in's milestones are called


def format_budget(b: dict[str, Any]) -> str:
    name, label = b["scheduler"], b["label"]
    what = WHAT.get(name, "milestones")
    head = f"{b['trials']} trials, {b['max_concurrent']} at a time, up to {b['epochs']} epochs each; "
    head += (f"{label} {what} at epochs {', '.join(map(str, b['rungs'])) or '(none)'}" if name != "fifo"
             else "FIFO: no trial stopped early")
    lines = [head, "trials reaching epoch " + ", ".join(f"{e}: {r}" for e, r in b["trials_reaching"].items())]
    lines.append(f"trial-epochs: ~{b[f'trial_epochs_{name}']} with {label}, {b['trial_epochs_all']} "
                 + ("if no trial is stopped" if b["stops_trials"] else "at most"))
    if f"gpu_hours_{name}" in b:
        lines.append(f"at the given seconds per trial-epoch: ~{b[f'gpu_hours_{name}']} GPU-hours with {label} "
                     f"({b['gpu_hours_all']} worst case), ~{_h(b[f'wall_hours_{name}'])} wall on {b['gpus_at_once']} GPUs"
                     if b["gpus_at_once"] else f"at the given seconds per trial-epoch: ~{_h(b[f'wall_hours_{name}'])} "
                     f"wall with {label} ({_h(b['wall_hours_all'])} worst case); CPU-only trials")
        lines.append("(plus ~20 s of Ray Train start-up per trial)" if b["ray_train"] else
                     "(plus a few seconds of start-up per trial: one worker runs in the trial itself)")
    return "\n".join(lines)


def _h(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
