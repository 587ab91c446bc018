"""Where things live: command modules parse, call and print -- nothing imports them; one function
starts Ray; code edits configs as typed values, never as ``key=value`` text.

Read from the source with ``ast`` (module-level and function-level imports alike), so a new import
anywhere in sslray/ or bench/ is checked the day it is written.
"""
import ast
from pathlib import Path

import pytest

from sslray.resources import local_cpus

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "sslray").rglob("*.py")) + sorted((REPO / "bench").glob("*.py"))
COMMANDS = {"sslray.train", "sslray.tune"}  # plus every sslray.<package>.__main__


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_command(module: str) -> bool:
    return module in COMMANDS or module.endswith(".__main__")


def _imports(path: Path):
    """(imported module, line) for every import in the file; ``from X import y`` counts X and X.y."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for a in node.names:
                yield f"{node.module}.{a.name}", node.lineno


def test_no_module_imports_a_command_module():
    """What others need lives in a library module (sslray.eval.offline, sslray.local_run,
    sslray.search.checks, ...): a command file is only ever run."""
    found = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in SOURCES for name, line in _imports(p)
             if _is_command(name) and name != _module(p)]
    assert not found, "\n".join(found)


def test_only_the_resources_module_starts_ray():
    """train, tune and compare all connect through sslray.resources.connect: one decision about the
    address and the local CPU count."""
    calls = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "init" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "ray":
                calls.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert calls and {c.split(":")[0] for c in calls} == {"sslray/resources.py"}, calls


def test_the_local_cpu_count_is_one_rule():
    import os

    cores = os.cpu_count() or 1
    assert local_cpus(None) == cores  # one-worker trials and a single run: one logical CPU per core
    assert local_cpus(None, driver_cpus=0.2) == cores + 1  # sleeping Ray Train drivers: whole CPUs on top
    assert local_cpus(None, driver_cpus=1.3) == cores + 2
    assert local_cpus(3.5, driver_cpus=1.3) == 3.5  # --num-cpus wins


def _key_value_strings(path: Path):
    """f-strings shaped like an override, ``f"train.output_dir={x}"``: config edits through text."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            head = str(node.values[0].value)
            key, eq, _ = head.partition("=")
            if eq and key.count(".") >= 1 and key.replace(".", "").replace("_", "").isalnum() and \
                    key.split(".")[0] in ("data", "views", "model", "loss", "optim", "train", "eval", "scale"):
                yield node.lineno, head


LIBRARY = [p for p in SOURCES if p.parts[-2] != "bench" and not _is_command(_module(p))]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(REPO)))
def test_code_edits_configs_as_typed_values(path):
    """``cfg.updated({...})`` / ``load_config(raw, {path: value})``: a value that is text read as
    YAML again loses what follows `` #`` and breaks at ``: ``. (Command modules are the edge where
    the user's text arrives; a comparison records its --epochs there as the override it stands for.)"""
    found = [f"{path.relative_to(REPO)}:{line}: {head}" for line, head in _key_value_strings(path)]
    assert not found, "\n".join(found)
