"""Offline evaluation of a checkpoint (or of the untrained encoder a config starts from): weighted
kNN, a linear probe trained afresh on frozen features, and collapse statistics -- what
``python -m sslray.eval`` prints, what a comparison's finals and a search's report score with.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from sslray.checkpoint import check_same_model, load_checkpoint, method_state, saved_config
from sslray.config import ConfigError, load_config, read_composed


def _yaml_config(path: str, overrides: list[str] | dict[str, Any] | None):
    """A run config YAML, or a search-space YAML (its base config: what every trial starts from)."""
    return load_config(read_composed(Path(path)), overrides)


def evaluate_checkpoint(source: str, overrides: list[str] | dict[str, Any] | None = None,
                        device: str = "auto") -> dict:
    """Score a checkpoint (file, run directory, URI) or a config YAML's untrained encoder.
    ``overrides`` may change the evaluation (data, ``eval.*``, views), not the model."""
    from sslray import data as data_mod
    from sslray.eval import collapse_stats, extract_features, knn_accuracy, linear_probe
    from sslray.methods import build_method

    if source.endswith((".yaml", ".yml")):
        cfg, state = _yaml_config(source, overrides), None
    else:
        state = load_checkpoint(source)
        cfg = load_config(state["config"], overrides)
        check_same_model(saved_config(state, source), cfg)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    t0 = time.perf_counter()
    train = data_mod.load_split(cfg.data, "train", seed=cfg.train.seed)
    test = data_mod.load_split(cfg.data, "test", seed=cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    # the online probe's width is the training data's class count: evaluating on other data (the
    # offline probe below is trained afresh) must still load the checkpoint's weights
    model = build_method(cfg, len(train.classes) if state is None else state.get("num_classes", len(train.classes)))
    if state is not None:
        model.load_state_dict(method_state(state))
    model.to(dev)
    e = cfg.eval
    kw = dict(views_cfg=cfg.views, batch_size=e.feature_batch_size,
              amp_dtype=torch.bfloat16 if dev.type == "cuda" else None)
    train_reps, _ = extract_features(model.encoder, train.images, **kw)
    test_reps, test_embs = extract_features(model.encoder, test.images, projector=model.projector, **kw)
    n_cls = len(train.classes)
    result = {
        "checkpoint": None if state is None else str(source), "untrained": state is None,
        "epoch": None if state is None else state["epoch"], "loss": cfg.loss.name, "encoder": cfg.model.encoder,
        "train_images": len(train), "test_images": len(test),
        "knn_top1": knn_accuracy(train_reps, train.labels, test_reps, test.labels, n_cls, e.knn_k, e.knn_t, e.knn_chunk),
        **linear_probe(train_reps, train.labels, test_reps, test.labels, n_cls, epochs=e.probe_epochs,
                       lr=e.probe_lr, batch_size=e.probe_batch_size, seed=cfg.train.seed),
        **collapse_stats(test_reps, test_embs),
    }
    result["eval_time_s"] = time.perf_counter() - t0
    return result


def check_arguments(device: str, output: str | None) -> None:
    """What can be judged before evaluating (minutes, on real data): the device and --output."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda is not available on this machine; allowed: cpu, auto")
    if output is None:
        return
    out, allowed = Path(output), "allowed: a file path in an existing folder"
    if out.is_dir():
        raise ConfigError(f"--output: {out} is a folder; {allowed}")
    if not out.parent.is_dir():
        raise ConfigError(f"--output: folder {out.parent} does not exist; {allowed}")
