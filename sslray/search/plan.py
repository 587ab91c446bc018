"""What a search costs before it runs: ASHA's rungs and the trial-epochs they allow.

``python -m sslray.tune SPACE.yaml --plan [--epoch-seconds S]`` prints this and starts nothing.

ASHA (``time_attr=epoch``) compares trials at rungs ``grace * eta**k`` below ``train.epochs``;
a trial goes on past a rung when it is in the top ``1/eta`` of the trials recorded there. The
expected spend follows synchronous successive halving: ``ceil(N / eta**k)`` trials reach rung
``k`` and ``ceil(N / eta**K)`` run to the end. Asynchronous ASHA promotes somewhat more (early
trials face a thinner field), so read it as the typical figure; without any stop the spend is
``N * epochs`` (the worst case). Collapse and NaN stops only lower it.
"""
from __future__ import annotations

import math
from typing import Any

from sslray.search.space import SearchSpace


def rungs(space: SearchSpace) -> list[int]:
    """The epochs at which ASHA compares trials (Ray's ASHAScheduler with one bracket)."""
    out, k = [], 0
    while (r := space.asha.grace_period * space.asha.reduction_factor ** k) < space.max_epochs:
        out.append(int(round(r)))
        k += 1
    return out


def budget(space: SearchSpace, epoch_seconds: float | None = None) -> dict[str, Any]:
    """Trial-epochs with ASHA (expected) and without it (every trial to the end), and GPU-hours
    when the time of one epoch of one trial (training + its evaluation) is given."""
    n, eta, stops = space.num_trials, space.asha.reduction_factor, rungs(space) + [space.max_epochs]
    reach = [math.ceil(n / eta ** k) for k in range(len(stops))]  # trials that reach each stop
    asha = sum(r * (stop - prev) for r, stop, prev in zip(reach, stops, [0] + stops[:-1]))
    out = {"trials": n, "max_concurrent": space.max_concurrent, "epochs": space.max_epochs,
           "rungs": stops[:-1], "trials_reaching": dict(zip(stops, reach)),
           "trial_epochs_asha": asha, "trial_epochs_all": n * space.max_epochs,
           "ray_train": space.base["scale"].get("workers", 1) >= 2}
    if epoch_seconds:
        gpus = _gpus_per_trial(space)
        for key in ("asha", "all"):
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


def format_budget(b: dict[str, Any]) -> str:
    lines = [f"{b['trials']} trials, {b['max_concurrent']} at a time, up to {b['epochs']} epochs each; "
             f"ASHA rungs at epochs {', '.join(map(str, b['rungs'])) or '(none)'}",
             "trials reaching epoch " + ", ".join(f"{e}: {r}" for e, r in b["trials_reaching"].items()),
             f"trial-epochs: ~{b['trial_epochs_asha']} with ASHA, {b['trial_epochs_all']} if no trial is stopped"]
    if "gpu_hours_asha" in b:
        lines.append(f"at the given seconds per trial-epoch: ~{b['gpu_hours_asha']} GPU-hours with ASHA "
                     f"({b['gpu_hours_all']} worst case), ~{_h(b['wall_hours_asha'])} wall on {b['gpus_at_once']} GPUs"
                     if b["gpus_at_once"] else f"at the given seconds per trial-epoch: ~{_h(b['wall_hours_asha'])} wall with ASHA "
                     f"({_h(b['wall_hours_all'])} worst case); CPU-only trials")
        lines.append("(plus ~20 s of Ray Train start-up per trial)" if b["ray_train"] else
                     "(plus a few seconds of start-up per trial: one worker runs in the trial itself)")
    return "\n".join(lines)


def _h(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
