"""MLflow's own console messages. MLflow sets up its loggers when it is first imported, so a
command that routes or quietens them imports it first, through :func:`set_up`."""
from __future__ import annotations

import logging

LOGGERS = ("mlflow", "alembic")  # alembic: a new SQLite store announces its tables


def set_up() -> None:
    """Import MLflow now: its console logging is in place afterwards, to be routed or quietened."""
    import mlflow  # noqa: F401


def quieten() -> None:
    """Only MLflow's warnings and errors on the console: a new store's lines are not news."""
    set_up()
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
