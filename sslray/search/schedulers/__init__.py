"""Schedulers as plug-ins, by name in the search-space file:

    search:
      scheduler: {name: asha, grace_period: 10, reduction_factor: 3}   # or {name: fifo}, {name: pbt, ...}

The older ``asha: {grace_period, reduction_factor}`` key still loads (as ``name: asha``). A new
scheduler is one :class:`~sslray.search.schedulers.base.Scheduler` subclass and one row in
:data:`SCHEDULERS` (and in the parametrised test over it).
"""
from __future__ import annotations

from typing import Any

from sslray.config import ConfigError
from sslray.search.schedulers.asha import Asha, AshaConfig, SoundASHA
from sslray.search.schedulers.base import Scheduler, SchedulerState
from sslray.search.schedulers.fifo import Fifo
from sslray.search.schedulers.pbt import Pbt

SCHEDULERS: dict[str, type[Scheduler]] = {"fifo": Fifo, "asha": Asha, "pbt": Pbt}

__all__ = ["SCHEDULERS", "Asha", "AshaConfig", "Fifo", "Pbt", "Scheduler", "SchedulerState", "SoundASHA",
           "parse_scheduler", "scheduler_from_record"]


def parse_scheduler(scheduler: Any, asha: Any) -> Scheduler:
    """The plug-in of ``search.scheduler`` (or of the older ``search.asha``, or ASHA's defaults)."""
    if scheduler is not None and asha is not None:
        raise ConfigError("search.asha: given beside search.scheduler; allowed: one of them "
                          "(search.scheduler: {name: asha, grace_period: ..., reduction_factor: ...})")
    if scheduler is None:
        return Asha.from_raw(asha, "search.asha")
    if not isinstance(scheduler, dict):
        raise ConfigError(f"search.scheduler: expected a mapping; allowed: {{name: {' | '.join(SCHEDULERS)}, ...}}")
    settings = dict(scheduler)
    name = settings.pop("name", None)
    if name not in SCHEDULERS:
        raise ConfigError(f"search.scheduler.name: {name!r} is not allowed; allowed: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name].from_raw(settings, "search.scheduler")


def scheduler_from_record(record: dict[str, Any]) -> Scheduler:
    """The plug-in of a stored search (space.json); one written before plug-ins has only ``asha``."""
    raw = dict(record.get("scheduler") or {"name": "asha", **record.get("asha", {})})
    return SCHEDULERS[raw.pop("name")].from_raw(raw)
