"""``python -m sslray.eval CHECKPOINT [key.sub=value ...]``: kNN + offline linear probe.

CHECKPOINT is a checkpoint file, a run directory (its latest checkpoint) or an MLflow model URI
of a search's best encoder (``models:/sslray-NAME@best``, with --tracking-uri). Passing a config
YAML (or a search-space YAML) instead evaluates the *untrained* encoder that config would start from -- the baseline a
pretrained encoder has to beat. Overrides change the evaluation data or settings, e.g.
``data.root=/data eval.probe_epochs=50``. Prints one JSON object (and writes it with --output).
Bad arguments, overrides or checkpoints fail before evaluating: one line on stderr, exit code 2.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from sslray.cli import ArgumentParser, fail


def _yaml_config(path: str, overrides: list[str] | None):
    """A run config YAML, or a search-space YAML (its base config: what every trial starts from)."""
    import yaml

    from sslray.config import load_config

    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raw = None  # load_config names the problem
    if isinstance(raw, dict) and "search" in raw:
        from sslray.search.space import load_search_space

        return load_search_space(path).trial_config({}, overrides)
    return load_config(path, overrides)


def evaluate_checkpoint(source: str, overrides: list[str] | None = None, device: str = "auto") -> dict:
    from sslray import data as data_mod
    from sslray.checkpoint import load_checkpoint, saved_config
    from sslray.config import load_config
    from sslray.eval import collapse_stats, extract_features, knn_accuracy, linear_probe
    from sslray.loop import method_state
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


def check_same_model(saved, cfg) -> None:
    """Overrides may change the evaluation (data, eval.*, views), not the model the checkpoint's
    weights belong to: that would fail in load_state_dict after the data is read."""
    from sslray.config import ConfigError
    from sslray.checkpoint import incompatibility

    differs = incompatibility(saved, cfg)
    if differs:
        name, value, now = differs
        raise ConfigError(f"{name}: {now} differs from the checkpoint's {value}; allowed: overrides "
                          f"that keep the checkpoint's model ({name}={value})")


def check_arguments(device: str, output: str | None) -> None:
    """What can be judged before evaluating (minutes, on real data): the device and --output."""
    from sslray.config import ConfigError

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda is not available on this machine; allowed: cpu, auto")
    if output is None:
        return
    out, allowed = Path(output), "allowed: a file path in an existing folder"
    if out.is_dir():
        raise ConfigError(f"--output: {out} is a folder; {allowed}")
    if not out.parent.is_dir():
        raise ConfigError(f"--output: folder {out.parent} does not exist; {allowed}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m sslray.eval", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="checkpoint file, run directory, or a config YAML (untrained baseline)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of the run's config")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto | cpu | cuda")
    parser.add_argument("--output", help="also write the JSON result here")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ sources")
    args = parser.parse_intermixed_args(argv)  # overrides may follow options

    from sslray.checkpoint import CheckpointError
    from sslray.config import ConfigError
    from sslray.data import DataError

    try:
        check_arguments(args.device, args.output)
        if args.tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(args.tracking_uri)
        result = evaluate_checkpoint(args.checkpoint, args.overrides, args.device)
    except CheckpointError as e:
        return fail(str(e.named("checkpoint")))
    except (ConfigError, DataError) as e:
        return fail(str(e))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
