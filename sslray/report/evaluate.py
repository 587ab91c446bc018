"""The best trial against the untrained encoder of the same config, on the full test set.

Both go through :func:`sslray.eval.offline.evaluate_checkpoint` (kNN + offline linear probe +
collapse statistics): the best trial's checkpoint (``summary.json["best"]["checkpoint"]``, a path
or a storage URI), and the trial's config -- the search's ``trial_config`` of its parameters,
written to ``report/untrained_config.yaml`` -- untrained. ``data.test_limit=null`` lifts any
test subset the search used to score epochs quickly. The result is cached in ``report/eval.json``,
keyed by the best trial and its checkpoint: a rerun recomputes only when the best changed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FULL_TEST = ["data.test_limit=null"]  # every test image


def cache_key(best: dict[str, Any]) -> dict[str, Any]:
    return {"trial_id": best.get("trial_id"), "checkpoint": best.get("checkpoint"),
            "mlflow_run_id": best.get("mlflow_run_id"), "overrides": FULL_TEST}


def best_vs_untrained(search, report_dir: Path, no_eval: bool) -> dict[str, Any]:
    """``{"skipped": why}`` or the cached/computed ``{"key", "best", "untrained", "cached"}``."""
    if no_eval:
        return {"skipped": "skipped with --no-eval: rerun without it to evaluate the best trial against the "
                           "untrained encoder"}
    best = (search.summary or {}).get("best")
    if search.summary is None or search.summary.get("status") != "finished" or search.status == "running":
        return {"skipped": f"the search is {search.status}: the best trial is chosen when it finishes"}
    if not best or not best.get("checkpoint"):
        return {"skipped": "the search has no best trial (no trial reported a score with a checkpoint)"}
    cache = report_dir / "eval.json"
    key = cache_key(best)
    if cache.is_file():
        old = json.loads(cache.read_text())
        if old.get("key") == key:
            return {**old, "cached": True}
    from sslray.config import ConfigError
    from sslray.data import DataError

    try:
        record = {"key": key, **_evaluate(search, best, report_dir)}
    except (ConfigError, DataError) as e:  # checkpoint gone, data not on this machine: say so, cache nothing
        return {"skipped": f"the evaluation failed ({' '.join(str(e).split())})"}
    cache.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return {**record, "cached": False}


def _evaluate(search, best: dict[str, Any], report_dir: Path) -> dict[str, Any]:
    from sslray.checkpoint import RAY_CKPT_FILE, resolve_checkpoint
    from sslray.config import dump_config
    from sslray.eval.offline import evaluate_checkpoint
    from sslray.search.trainable import trial_config

    local = resolve_checkpoint(best["checkpoint"])  # a copy, when it is a storage URI
    local = local / RAY_CKPT_FILE if (local / RAY_CKPT_FILE).is_file() else local
    trained = evaluate_checkpoint(str(local), FULL_TEST)
    trained["checkpoint"] = best["checkpoint"]
    cfg = trial_config(search.search_space(), best["params"], str(search.folder / "trials"), best["trial_id"])
    untrained_yaml = report_dir / "untrained_config.yaml"
    dump_config(cfg, untrained_yaml)
    return {"best": trained, "untrained": evaluate_checkpoint(str(untrained_yaml), FULL_TEST)}
