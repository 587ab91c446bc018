"""What a search or comparison checks on its command line before anything starts: the experiment
name and output folder, the local CPUs, --plan's options, and that a local Ray's trials will find
the data on this machine's disk. Each problem is one ConfigError naming the flag."""
from __future__ import annotations

import os
import re
from pathlib import Path

from sslray.config import ConfigError, load_config


def check_data_here(base: dict, address: str | None) -> None:
    """On a local Ray the trials read the data from this machine's disk: a missing dataset is bad
    input, refused before anything starts (on a cluster the workers' disks are not ours to check)."""
    if address or os.environ.get("RAY_ADDRESS"):
        return
    from sslray.data import check_available

    check_available(load_config(base).data)


def check_experiment(name: str, output: str, num_cpus: float | None = None, plan: bool = False,
                     epoch_seconds: float | None = None) -> None:
    """``--name``, ``--output``, ``--num-cpus`` and ``--epoch-seconds`` (only with ``--plan``)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"--name: {name!r} is not a usable experiment name; allowed: letters, digits, '.', '_', '-'")
    out = Path(output).absolute()
    for folder in (out, *out.parents):  # the nearest existing ancestor must be a writable folder
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"--output: {folder} is a file; allowed: a folder (created if missing)")
            if not os.access(folder, os.W_OK):
                raise ConfigError(f"--output: {folder} is not writable; allowed: a folder you can write to")
            break
    if num_cpus is not None and not num_cpus > 0:
        raise ConfigError(f"--num-cpus: {num_cpus:g} is out of range; allowed: > 0")
    if epoch_seconds is not None and not (plan and epoch_seconds > 0):
        raise ConfigError("--epoch-seconds: allowed only with --plan, and > 0")
