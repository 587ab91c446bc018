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
from pathlib import Path

from sslray.cli import ArgumentParser, fail
from sslray.eval.offline import check_arguments, evaluate_checkpoint


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
            from sslray.tracking import use_by_default

            use_by_default(args.tracking_uri)
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
