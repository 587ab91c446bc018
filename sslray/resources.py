"""Ray: where runs go and whether they will ever fit, decided before the first trial or worker starts.

:func:`connect` is the one place sslray starts or joins Ray (``sslray.train``, ``sslray.tune``,
``sslray.compare``, the benchmarks), with one rule for a local Ray's CPU count (:func:`local_cpus`).

A Ray run that asks for resources no node has (a GPU on a CPU-only machine, more CPUs per worker
than the largest node) waits for ever with no error (REFERENCE §9). :func:`check_cluster` turns
that into one ConfigError line naming the ``scale.*`` field and what the cluster has -- unless the
cluster has an autoscaler that can still add such nodes, in which case waiting is right and it
says so in the log.
"""
from __future__ import annotations

import math
import os
from typing import Callable

from sslray.config import ConfigError, ScaleConfig


def _bundle(s: ScaleConfig) -> dict[str, float]:
    return {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {})}


def _fits(node: dict[str, float], bundle: dict[str, float]) -> int:
    """How many worker bundles one node holds."""
    return min(math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in bundle.items())


def _describe(nodes: list[dict[str, float]]) -> str:
    cpus = sum(n.get("CPU", 0) for n in nodes)
    gpus = sum(n.get("GPU", 0) for n in nodes)
    return f"{len(nodes)} node(s), {cpus:g} CPUs and {gpus:g} GPUs in all, at most {max((n.get('CPU', 0) for n in nodes), default=0):g} CPUs on one"


def shortfall(s: ScaleConfig, nodes: list[dict[str, float]]) -> str | None:
    """Why ``nodes`` (each a resource dict) can never run ``s.workers`` workers, or None if they can."""
    if s.workers == 0:
        return None
    bundle, has = _bundle(s), _describe(nodes)
    if s.use_gpu and not any(n.get("GPU", 0) > 0 for n in nodes):
        return f"scale.use_gpu: the run asks for {s.gpus_per_worker:g} GPU per worker, but the cluster has no GPU ({has}); allowed: scale.use_gpu=false, or a cluster with GPUs"
    if s.use_gpu and not any(n.get("GPU", 0) >= s.gpus_per_worker for n in nodes):
        most = max(n.get("GPU", 0) for n in nodes)
        return f"scale.gpus_per_worker: {s.gpus_per_worker:g} GPUs per worker, but the largest node has {most:g} ({has}); allowed: <= {most:g}"
    if not any(_fits(n, bundle) for n in nodes):
        most = max((n.get("CPU", 0) for n in nodes if not s.use_gpu or n.get("GPU", 0) >= s.gpus_per_worker), default=0)
        return f"scale.cpus_per_worker: {s.cpus_per_worker:g} CPUs per worker, but the largest node{' with a GPU' if s.use_gpu else ''} has {most:g} ({has}); allowed: <= {most:g}"
    per_node = [_fits(n, bundle) for n in nodes]
    room = {"STRICT_PACK": max(per_node), "STRICT_SPREAD": sum(1 for k in per_node if k)}.get(s.placement_strategy, sum(per_node))
    if s.workers > room:
        where = {"STRICT_PACK": " on one node", "STRICT_SPREAD": " on distinct nodes"}.get(s.placement_strategy, "")
        return (f"scale.workers: {s.workers} workers of {s.cpus_per_worker:g} CPU{f' + {s.gpus_per_worker:g} GPU' if s.use_gpu else ''} "
                f"do not fit the cluster{where} ({has}: room for {room}); allowed: scale.workers <= {room}")
    return None


def autoscaler_max() -> dict[str, float] | None:
    """The most the cluster's autoscaler could ever provide, or None if it has no autoscaler."""
    try:
        from ray._private.state import state  # what `ray up` clusters publish; no public API in 2.60

        return state.get_max_resources_from_cluster_config()
    except Exception:
        return None


def local_node(num_cpus: float | None = None) -> dict[str, float]:
    """What a local Ray started on this machine will have: ``num_cpus`` (default: the cores) and
    the GPUs Ray itself would detect (CUDA_VISIBLE_DEVICES respected)."""
    import os

    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        gpus = get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators()
    except Exception:  # Ray's detection moved: ask torch
        import torch

        gpus = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = min(gpus, len([d for d in visible.split(",") if d.strip()]))
    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(gpus)}


def check_local(s: ScaleConfig, num_cpus: float | None = None) -> None:
    """Before starting a local Ray: a fixed local Ray never adds resources, so a shortfall is final.
    (Checked before ``ray.init``, so the error is the only line printed.)"""
    problem = shortfall(s, [local_node(num_cpus)])
    if problem is not None:
        raise ConfigError(problem)


def check_cluster(s: ScaleConfig, log: Callable[[str], None] = print) -> None:
    """Raise ConfigError if the connected Ray cluster will never fit the run; log if it must wait."""
    import ray

    nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    problem = shortfall(s, nodes)
    if problem is None:
        return
    most = autoscaler_max()
    if most is None:
        raise ConfigError(problem)
    if s.use_gpu and not most.get("GPU"):
        raise ConfigError(f"{problem} (its autoscaler has no GPU node type either)")
    log(f"waiting for the autoscaler to add nodes: {problem.split(';')[0]}")


def local_cpus(num_cpus: float | None, driver_cpus: float = 0.0) -> float:
    """Logical CPUs of a local Ray: as asked, else one per core plus whole CPUs for ``driver_cpus``.

    A Tune trial that runs Ray Train workers (a search trial of two or more workers, a comparison's
    final) holds a fraction of a CPU while it sleeps on them; with exactly one logical CPU per core
    those fractions would keep the last worker from a CPU, so trials meant to run side by side would
    run one after another. A trial that runs the loop itself holds only its workers' CPUs."""
    if num_cpus is not None:
        return num_cpus
    return (os.cpu_count() or 1) + (math.ceil(driver_cpus) if driver_cpus > 0 else 0)


def connect(scales: list[ScaleConfig], address: str | None = None, num_cpus: float | None = None,
            driver_cpus: float = 0.0, log_to_driver: bool = True) -> str:
    """Start or join Ray for ``sslray.train``, ``sslray.tune`` and ``sslray.compare`` -- the one place
    that decides where runs go and how many CPUs a local Ray has -- after checking that every run
    (``scales``) fits. Returns "connected" (Ray was already up: the caller's), "local" or the address.

    ``address`` (else $RAY_ADDRESS) joins a cluster, else a new local Ray starts with
    :func:`local_cpus`. A local shortfall is refused before anything starts (the error is the only
    line printed); a cluster's is refused unless its autoscaler can add the resource."""
    import ray

    if ray.is_initialized():  # connected by the caller: whatever it is, not ours to judge as local
        where = "connected"
    else:
        where = address or os.environ.get("RAY_ADDRESS") or "local"
        if where == "local":
            for s in scales:
                check_local(s, num_cpus)
            num_cpus = local_cpus(num_cpus, driver_cpus)
        start_ray(where, num_cpus, log_to_driver=log_to_driver)
    for s in scales:
        check_cluster(s)
    return where


def start_ray(address: str | None, num_cpus: float | None = None, **kwargs) -> None:
    """``ray.init``: a new local Ray unless an address (or $RAY_ADDRESS) names a cluster.

    A local Ray gets its GCS port chosen here and exported as $RAY_ADDRESS before it starts, so its
    processes inherit it. Ray Train's controller actors ask the state API "is this actor alive?"
    with no address; without $RAY_ADDRESS that means "auto", which fails with "Found multiple
    active Ray instances" as soon as a second local Ray runs on the machine (two searches, a
    search and a test suite), and the trial then times out waiting for its workers."""
    import socket

    import ray

    if ray.is_initialized():
        return
    # "local" unless told otherwise: a stale /tmp/ray/ray_current_cluster must not make us join a dead cluster.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        from ray._private.services import get_node_ip_address

        with socket.socket() as s:  # a free port; the tiny window until the GCS binds it is accepted
            s.bind(("", 0))
            port = s.getsockname()[1]
        before = {k: os.environ.get(k) for k in ("RAY_GCS_SERVER_PORT", "RAY_ADDRESS")}
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
        os.environ["RAY_ADDRESS"] = f"{get_node_ip_address()}:{port}"
        try:  # the raylet copies this environment now, and hands it to every worker it starts
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
        finally:  # this process may start another local Ray later: leave its environment as it was
            for k, v in before.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        return
    ray.init(address=address, num_cpus=num_cpus, **kwargs)
