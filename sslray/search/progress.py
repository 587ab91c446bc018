"""What a search prints while it runs: one line per trial-epoch, one per trial end, the running best.

Ray's and Tune's own output (status tables, actor and raylet messages, deprecation warnings) goes
to ``<experiment>/ray.log`` instead; ``-v`` shows it on the terminal as well. A trial's own log
(config, resume, the epoch lines) is its run directory's log.txt.

    trial 9c1e2_00000 start | loss.params.mu=25 loss.params.nu=1 optim.lr=0.3
    trial 9c1e2_00000 epoch   1/8 | loss 23.41 (inv 0.81 var 0.72 cov 0.31) | lr 0.3 | knn 38.60% ... | 2310 img/s 8.7s | best 38.60% (9c1e2_00000, epoch 1)
    trial 9c1e2_00001 end   | stopped by ASHA at epoch 2 | knn_top1 31.20%
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from ray.tune import Callback

from sslray.rundir import format_epoch
from sslray.search.outcome import trial_outcome

# loggers that talk on the terminal during a search: Ray (and Tune, Train), the MLflow and Optuna
# stores (migrations, "A new study created"), and the root logger (Ray Train V2 names some of its
# loggers by file path, outside the "ray" tree)
ROUTED = ("ray", "mlflow", "alembic", "optuna", "")


@contextlib.contextmanager
def routed_logs(path: Path, verbose: bool) -> Iterator[None]:
    """Send the routed loggers and Python warnings to ``path`` while the search runs (and, with
    ``verbose``, to the terminal as before); restored afterwards."""
    handler = _LateFileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in ROUTED:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
        if not verbose:
            logger.handlers = [h for h in logger.handlers if not _is_terminal(h)]
        logger.addHandler(handler)
        if name:
            logger.propagate = False  # written once, by its own handler, not again by the root's
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> root -> the file
    # Tune's new output engine prints its experiment header with print() even at verbose=0; the
    # legacy engine at verbose=0 prints nothing
    engine = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        os.environ.pop("RAY_AIR_NEW_OUTPUT", None) if engine is None else os.environ.__setitem__("RAY_AIR_NEW_OUTPUT", engine)
        logging.captureWarnings(False)
        for logger, handlers, propagate, level in saved:
            logger.handlers, logger.propagate, logger.level = handlers, propagate, level
        handler.close()


class _LateFileHandler(logging.Handler):
    """A file handler whose folder may not exist yet: the search checks the cluster before it
    creates anything, so Ray's start-up messages wait in memory until the experiment folder exists
    (and are dropped if the search is refused: a refused search leaves nothing behind)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path, self.pending, self.file = Path(path), [], None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pending.append(self.format(record))
            if self.file is None and self.path.parent.is_dir():
                self.file = open(self.path, "a")
            if self.file is not None:
                self.file.write("".join(line + "\n" for line in self.pending))
                self.file.flush()
                self.pending.clear()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


def _is_terminal(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


class SearchProgress(Callback):
    """The search's terminal output, written by the driver from the results Tune receives."""

    def __init__(self, space):
        self.space = space  # pickled with Tune's state: a restored search gets it back
        self.best: tuple[float, str, int] | None = None  # (score, trial id, epoch)

    def _say(self, line: str) -> None:
        print(line, file=sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        shown = self.__dict__.setdefault("shown", {})  # trial id -> last epoch printed
        if trial.trial_id in shown:
            return  # resumed after a pause (PBT) or a restore: said when it started
        shown[trial.trial_id] = 0
        params = " ".join(f"{k}={_short(v)}" for k, v in trial.config.items())
        self._say(f"trial {trial.trial_id} start | {params}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result or ("loss" not in result and "status" not in result):
            return
        shown = self.__dict__.setdefault("shown", {})
        segments = self.__dict__.setdefault("segments", set())
        parent = result.get("segment_parent")
        if parent is not None and (trial.trial_id, parent, result.get("segment_start")) not in segments:
            segments.add((trial.trial_id, parent, result.get("segment_start")))
            params = " ".join(f"{k}={_short(v)}" for k, v in trial.config.items())
            self._say(f"trial {trial.trial_id} goes on from trial {parent}'s epoch {result.get('segment_start')} | {params}")
        if int(result["epoch"]) <= shown.get(trial.trial_id, 0) and "status" not in result:
            return  # a resumed trial reports its checkpoint's epoch again
        shown[trial.trial_id] = int(result["epoch"])
        metric, score = self.space.metric, result.get(self.space.metric)
        if isinstance(score, (int, float)) and math.isfinite(score):
            better = self.best is None or (score > self.best[0] if self.space.mode == "max" else score < self.best[0])
            if better:
                self.best = (float(score), trial.trial_id, int(result["epoch"]))
        line = f"trial {trial.trial_id} " + format_epoch(result, self.space.max_epochs)
        if self.best is not None:
            line += f" | best {_value(metric, self.best[0])} ({self.best[1]}, epoch {self.best[2]})"
        self._say(line)

    def on_trial_complete(self, iteration, trials, trial, **info):
        outcome, reason = trial_outcome(self.space, trial.last_result)
        last = (trial.last_result or {}).get(self.space.metric)
        shown = f" | {self.space.metric} {_value(self.space.metric, last)}" if isinstance(last, (int, float)) else ""
        said = reason if outcome not in ("finished", "diverged", "failed") else f"{outcome}: {reason}"  # the reason names those
        self._say(f"trial {trial.trial_id} end   | {said}{shown}")

    def on_trial_error(self, iteration, trials, trial, **info):
        where = getattr(trial, "error_file", None) or "see ray.log"
        self._say(f"trial {trial.trial_id} end   | failed: error, see {where}")


def _value(metric: str, v: Any) -> str:
    """Scores in [0, 1] read as percentages (kNN, probe top-1); anything else as a number."""
    return f"{100 * v:.2f}%" if metric.endswith("top1") else f"{v:.4g}"


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
