"""Golden regression: a seeded tiny run of every method gives the same losses, scores and final
weights as when the golden file was written.

Refactors (issue 18: configs, method registry, checkpoints, trackers) must not change what a run
computes. Each case pretrains the tiny synthetic config for two epochs in this process and compares
  - every per-epoch metric except timings (loss and its terms, probe loss, lr, kNN, probe, RankMe,
    embedding std), and
  - a SHA-256 of every tensor of the final checkpoint's ``model`` (the method's state_dict: networks,
    EMA targets, queues, C, counters) and of its optimizer state,
with ``tests/golden/tiny_runs.json``. Floating-point results depend on the torch build and the CPU's
vector instructions, so the file holds one entry per (torch version, CPU capability): where this
machine's entry exists the comparison is bit for bit; elsewhere the metrics and per-tensor sums are
compared with a tolerance against the first entry, and the assertion says so.

Write this machine's entry (only after a change that is *meant* to change numerics, with the reason in
the commit message):  ``python tests/test_golden.py --write``
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny_runs.json"
TIMINGS = ("img_per_s", "epoch_time_s", "eval_time_s", "worker_nodes")

# One case per registered method (plus UOTA and multi-crop), each with what its tiny setting needs.
CASES = {
    "vicreg": {},
    "tico": {},
    "vicreg_tico": {"loss": {"name": "vicreg_tico", "params": {"nu": 0.01}}},
    "barlow": {},
    "simclr": {},
    "moco": {"loss": {"name": "moco", "params": {"queue_size": 96}}},
    "byol": {},
    "simsiam": {},
    "wmse": {"loss": {"name": "wmse", "params": {"w_size": 16.0, "w_iter": 2.0}}, "model": {"projector": "32-8"}},
    "swav": {},
    "swav_multicrop": {"loss": {"name": "swav", "params": {}},
                       "data": {"synthetic_image_size": 32},  # 32 px global crops, 16 px local ones
                       "views": {"size": 32, "crops": [{}, {}, {"count": 2, "size": 16, "crop_scale": [0.05, 0.3]}]}},
    "simclr_uota": {"loss": {"name": "simclr", "params": {}, "uota": {"enabled": True, "tau": 350.0}}},
}


def machine_key() -> str:
    return f"torch {torch.__version__} / {torch.backends.cpu.get_cpu_capability()}"


def case_config(name: str, tmp: Path) -> dict:
    cfg = tiny_config(tmp)
    cfg["optim"]["name"] = "lars"
    cfg["loss"] = {"name": name, "params": {}}
    for section, values in CASES[name].items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def _digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()[:16]


def _tensors(tree, prefix: str = ""):
    """(name, tensor) for every tensor in a nested dict/list (optimizer states), in a stable order."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k in sorted(tree, key=str):
            yield from _tensors(tree[k], f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _tensors(v, f"{prefix}.{i}")


def run_case(name: str) -> dict:
    """Pretrain one case from scratch (seed 0, two epochs) and return what the golden file holds."""
    from sslray.checkpoint import load_checkpoint
    from sslray.config import load_config
    from sslray.loop import run
    from sslray.local_run import LocalReporter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reduction order of a few kernels depends on the thread count
    try:
        with tempfile.TemporaryDirectory() as d:
            cfg = load_config(case_config(name, Path(d)))
            rep = LocalReporter(cfg, Path(d) / "run", None, echo=False)
            summary = run(cfg, rep)
            assert summary["status"] == "finished", summary
            lines = [json.loads(x) for x in (Path(d) / "run" / "metrics.jsonl").read_text().splitlines()]
            ckpt = load_checkpoint(rep.last_checkpoint)
    finally:
        torch.set_num_threads(threads)
    metrics = [{k: v for k, v in m.items() if k not in TIMINGS} for m in lines]
    state = {"model": ckpt["model"], "optimizer": ckpt["optimizer"], "probe_optimizer": ckpt["probe_optimizer"]}
    tensors = dict(_tensors(state))
    return {"metrics": metrics,
            "sha256": {k: _digest(t) for k, t in tensors.items()},
            "sums": {k: float(t.double().sum()) for k, t in tensors.items() if t.is_floating_point()}}


def _golden() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.parametrize("name", list(CASES))
def test_a_seeded_tiny_run_is_unchanged(name):
    golden = _golden()
    assert golden, f"{GOLDEN} is missing: write it with `python tests/test_golden.py --write`"
    key = machine_key()
    got = run_case(name)
    if key in golden:  # the machine the file was written on: bit for bit
        want = golden[key][name]
        assert got["metrics"] == want["metrics"], f"{name}: per-epoch metrics changed"
        changed = sorted(k for k in want["sha256"] if got["sha256"].get(k) != want["sha256"][k])
        assert set(got["sha256"]) == set(want["sha256"]), f"{name}: state keys changed"
        assert not changed, f"{name}: final tensors changed: {changed[:8]}"
        return
    # another torch build or CPU: the same run to float tolerance (bit-identity is per build)
    ref_key = next(iter(golden))
    want = golden[ref_key][name]
    assert len(got["metrics"]) == len(want["metrics"])
    for g, w in zip(got["metrics"], want["metrics"]):
        assert set(g) == set(w), f"{name}: metric names changed"
        for k in w:
            if isinstance(w[k], float):
                assert g[k] == pytest.approx(w[k], rel=2e-2, abs=2e-3), f"{name}: {k} vs {ref_key}"
    assert set(got["sums"]) == set(want["sums"]), f"{name}: state keys changed"


def main() -> None:
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_golden.py --write")
    golden = _golden()
    golden[machine_key()] = {name: run_case(name) for name in CASES}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} [{machine_key()}]: {', '.join(CASES)}")


if __name__ == "__main__":
    main()
