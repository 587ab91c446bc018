"""What a new user gets from the README's install command: every console script works."""
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

SCRIPTS = [ep for ep in distribution("sslray").entry_points if ep.group == "console_scripts"]


def test_the_documented_scripts_are_installed():
    assert {ep.name for ep in SCRIPTS} >= {"sslray-train", "sslray-eval", "sslray-tune"}


@pytest.mark.parametrize("ep", SCRIPTS, ids=lambda ep: ep.name)
def test_every_console_script_runs(ep):
    assert callable(ep.load())  # the target named in pyproject exists
    exe = Path(sys.executable).parent / ep.name  # installed next to this interpreter
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: python -m sslray.") and "--help" in proc.stdout
