"""The cluster-launcher configs in cluster/ pass the validation `ray up` runs, and say what we rely on.

`ray up` (ray/autoscaler/_private/commands.py, `_bootstrap_config`) first calls
`prepare_config` (merges the provider's defaults.yaml; for the local provider builds the single
node type from the IPs) and, after asking the cloud to fill in missing node resources, calls
`validate_config` (ray-schema.json plus a few checks). Both steps are offline; only the resource
autodetection and `bootstrap_config` (IAM, key pairs, subnets, AMI) call AWS. These tests run the
two offline steps on the files as written, show that the same steps reject broken copies, and check
the facts the configs are written around. No network, no cluster.
"""
from __future__ import annotations

import copy
import fnmatch
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
CONFIGS = ["gpu.yaml", "local.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def ray_validate(cfg: dict) -> dict:
    """`ray up`'s offline checks; returns the prepared config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


# ---------------------------------------------------------------------------------------------
# (a) the files validate


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_ray_validation(name):
    cfg = load(name)
    prepared = ray_validate(cfg)
    assert prepared["provider"]["type"] == {"gpu.yaml": "aws", "local.yaml": "local"}[name]
    assert prepared["head_node_type"] in prepared["available_node_types"]
    for node_type in prepared["available_node_types"].values():
        assert node_type["min_workers"] <= node_type["max_workers"] <= prepared["max_workers"]


def test_local_config_has_no_node_types_and_ray_refuses_them():
    cfg = load("local.yaml")
    assert "available_node_types" not in cfg and "head_node_type" not in cfg
    # ray up builds one node type per on-prem cluster from head_ip / worker_ips ...
    prepared = ray_validate(cfg)
    (node_type,) = prepared["available_node_types"].values()
    n_ips = len(cfg["provider"]["worker_ips"])
    assert node_type["min_workers"] == node_type["max_workers"] == n_ips
    # ... and aborts when the file brings its own.
    import click

    cfg["available_node_types"] = {"gpu": {"resources": {"GPU": 1}, "node_config": {}}}
    with pytest.raises(click.ClickException, match="available_node_types"):
        ray_validate(cfg)


# ---------------------------------------------------------------------------------------------
# (b) the same validation rejects broken copies: the checks above are live


def _rename(cfg, old, new):
    cfg[new] = cfg.pop(old)


BROKEN = [
    ("gpu.yaml", "misspelled top-level key", lambda c: _rename(c, "max_workers", "max_worker"), "max_worker"),
    ("gpu.yaml", "fractional GPU resource",
     lambda c: c["available_node_types"]["gpu_1x"]["resources"].update(GPU=1.5), "1.5"),
    ("gpu.yaml", "string instead of boolean",
     lambda c: c["provider"].update(cache_stopped_nodes="false"), "'false' is not of type 'boolean'"),
    ("local.yaml", "misspelled top-level key", lambda c: _rename(c, "max_workers", "max_worker"), "max_worker"),
    ("local.yaml", "misspelled auth key", lambda c: _rename(c["auth"], "ssh_user", "ssh_usr"), "ssh_usr"),
    ("local.yaml", "worker_ips as one string",
     lambda c: c["provider"].update(worker_ips=", ".join(c["provider"]["worker_ips"])), "is not of type 'array'"),
]


@pytest.mark.parametrize("name,what,breakage,message", BROKEN, ids=[f"{n}-{w}" for n, w, _, _ in BROKEN])
def test_broken_copy_is_rejected(name, what, breakage, message):
    cfg = load(name)
    ray_validate(cfg)  # the file as written passes ...
    breakage(cfg)
    with pytest.raises(jsonschema.ValidationError) as err:  # ... the broken copy does not
        ray_validate(cfg)
    assert message in str(err.value)


# ---------------------------------------------------------------------------------------------
# (c) facts the configs are written around


def test_gpu_head_has_cpus_and_no_gpu_workers_have_gpus():
    prepared = ray_validate(load("gpu.yaml"))
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]["resources"]
    assert head["GPU"] == 0 and head["CPU"] >= 1
    workers = {k: v for k, v in types.items() if k != prepared["head_node_type"]}
    assert workers and all(t["resources"]["GPU"] >= 1 for t in workers.values())
    assert any(t["max_workers"] > 0 for t in workers.values())


def test_gpu_cluster_fits_the_tico_search():
    """search_spaces/tico.yaml's concurrent trials all get their GPU workers, their drivers a CPU share."""
    space = yaml.safe_load((REPO / "search_spaces" / "tico.yaml").read_text())
    scale, concurrent = space["config"]["scale"], space["search"]["max_concurrent"]
    assert scale["use_gpu"]
    prepared = ray_validate(load("gpu.yaml"))
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    # Train workers per node: one GPU and cpus_per_worker CPUs each.
    capacity = max(min(t["max_workers"], prepared["max_workers"])
                   * min(t["resources"]["GPU"], t["resources"]["CPU"] // scale["cpus_per_worker"])
                   for k, t in types.items() if k != head)
    assert capacity >= concurrent * scale["workers"]
    assert types[head]["resources"]["CPU"] >= 0.1 * concurrent  # trial drivers: 0.1 CPU each (search/run.py)


def _auth_modes_before_ray_start(commands: list[str]) -> list[str]:
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 1, starts
    before = starts[0].split("ray start")[0]
    return re.findall(r"export RAY_AUTH_MODE=(\w+)", before)


@pytest.mark.parametrize("name", CONFIGS)
def test_head_and_workers_start_with_the_same_token_auth(name):
    """Token auth on both sides, and every node gets the one token (REFERENCE.md section 3)."""
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    prepared = ray_validate(load(name))
    head = _auth_modes_before_ray_start(prepared["head_start_ray_commands"])
    worker = _auth_modes_before_ray_start(prepared["worker_start_ray_commands"])
    assert head == worker == ["token"]
    # The launcher copies no token: file_mounts must carry the file Ray reads by default, from the
    # same path on this machine, where `ray get-auth-token --generate` writes it.
    token_mounts = {remote: local for remote, local in prepared["file_mounts"].items()
                    if os.path.expanduser(remote) == str(_get_default_token_path())}
    assert token_mounts and all(os.path.expanduser(local) == str(_get_default_token_path())
                                for local in token_mounts.values())


@pytest.mark.parametrize("name", CONFIGS)
def test_setup_commands_install_the_mounted_checkout(name):
    prepared = ray_validate(load(name))
    (checkout,) = [remote for remote, local in prepared["file_mounts"].items() if local == "."]
    for side in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in
        cmds = prepared[side]
        assert any("pip install" in c and checkout in c for c in cmds), (side, cmds)
        # Not the defaults' `pip install` of a Ray nightly wheel: the cluster must run Ray 2.60.
        assert not any("ray-wheels" in c for c in cmds), (side, cmds)
    assert (REPO / "pyproject.toml").exists()  # what `pip install -e <checkout>` builds


def _rsync_excluded(rel_path: str, patterns: list[str]) -> bool:
    """Whether `rsync --exclude P ...` (transfer root = the checkout) leaves out rel_path or one of
    its parent directories. Covers the pattern forms the configs use ("/top-level[/]" anchored to
    the root, "glob[/]" matching a name at any depth) and fails on any other form."""
    parts = rel_path.split("/")
    entries = [("/".join(parts[:i]), True) for i in range(1, len(parts))] + [(rel_path, False)]
    for pattern in patterns:
        dir_only, core = pattern.endswith("/"), pattern.rstrip("/")
        anchored, core = core.startswith("/"), core.lstrip("/")
        assert "/" not in core and "**" not in core and "[" not in core, f"pattern form not covered: {pattern}"
        for path, is_dir in entries:
            if dir_only and not is_dir:
                continue
            if anchored and "/" not in path and fnmatch.fnmatchcase(path, core):
                return True
            if not anchored and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], core):
                return True
    return False


@pytest.mark.parametrize("name", CONFIGS)
def test_rsync_excludes_drop_outputs_but_not_the_package(name):
    excludes = load(name)["rsync_exclude"]
    needed = ["pyproject.toml", "README.md"] + [
        p.relative_to(REPO).as_posix()
        for folder in ("sslray", "search_spaces")
        for p in (REPO / folder).rglob("*")
        if p.is_file() and p.suffix in {".py", ".yaml", ".toml", ".md"} and "__pycache__" not in p.parts]
    assert "sslray/data/__init__.py" in needed  # the package has a data/ of its own
    assert [f for f in needed if _rsync_excluded(f, excludes)] == []
    for output in ("data/cifar10/train.parquet", "runs/t/checkpoints/epoch_0001.pt",
                   "experiments/tico/tune/experiment_state.json", ".git/HEAD", "mlflow.db",
                   "sslray/__pycache__/loop.cpython-311.pyc"):
        assert _rsync_excluded(output, excludes), output


@pytest.mark.parametrize("name,artifacts", [("gpu.yaml", "s3://"), ("local.yaml", "/mnt/shared/")])
def test_mlflow_server_runs_on_the_head_with_shared_artifacts(name, artifacts):
    prepared = ray_validate(load(name))
    head = " ".join(prepared["head_start_ray_commands"])
    assert "mlflow server" in head and "--port 5000" in head
    assert "mlflow" not in " ".join(prepared["worker_start_ray_commands"])
    assert re.search(r"--artifacts-destination (\S+)", head).group(1).startswith(artifacts)
