"""``python -m sslray.compare A.yaml B.yaml [...] [key.sub=value ...]``: is recipe A better than B?

Each arm (a search-space file) gets the same search budget (trials x epochs), then each arm's best
config is retrained from scratch with N seeds on the full schedule and evaluated offline (kNN and a
linear probe on the full test set). The answer, in ``<output>/<name>/compare.json`` and MLflow:
per-arm mean with a 95 % t interval (and the percentile bootstrap beside it), every pair's
difference with its Welch interval, Welch and permutation p-values, each arm's collapse rate during
its search, and the wall time and trial-epochs each arm spent. ``python -m sslray.report
<output>/<name>`` renders it. ``--resume`` continues a killed comparison where it stopped.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from sslray.cli import ArgumentParser, int_at_least


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m sslray.compare", description=__doc__.split("\n")[0])
    ap.add_argument("arms", nargs="+", metavar="SPACE.yaml|key=value",
                    help="two or more search-space YAMLs (the arms, named by their file stems), and overrides "
                         "applied to every arm, e.g. data.root=/data")
    ap.add_argument("--name", default="compare", help="experiment name (default: compare)")
    ap.add_argument("--output", default="experiments", help="experiments folder (default: ./experiments)")
    ap.add_argument("--seeds", type=int_at_least(2), default=5, help="final retrainings per arm (default: 5)")
    ap.add_argument("--trials", type=int_at_least(1), help="search trials per arm (default: the files' num_trials, which must agree)")
    ap.add_argument("--epochs", type=int_at_least(1), help="epochs per trial and per final (default: the files' train.epochs)")
    ap.add_argument("--finals-concurrent", type=int_at_least(1), default=2, help="finals trained at once (default: 2)")
    ap.add_argument("--resume", action="store_true", help="continue the comparison of the same name")
    ap.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--storage", help="where Tune state and checkpoints go on a multi-node cluster: a path or pyarrow URI")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default: <experiment>/mlflow.db)")
    ap.add_argument("--num-cpus", type=float, help="logical CPUs of a local Ray (default: the machine's cores + 1)")
    args = ap.parse_intermixed_args(argv)

    from sslray.config import ConfigError, absolute_overrides
    from sslray.data import DataError

    try:
        arms, spec, exp_dir = prepare(args, absolute_overrides([a for a in args.arms if _is_override(a)]),
                                      [a for a in args.arms if not _is_override(a)])
        from sslray.compare.run import run_compare

        result = run_compare(arms, exp_dir, spec["seeds"], spec, args.resume, tracking_uri=args.tracking_uri,
                             address=args.address, num_cpus=args.num_cpus, storage=args.storage,
                             finals_concurrent=args.finals_concurrent)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result["status"] == "failed":
        print(format_answer(result))
        print(f"error: {result['error']}; continue with the same command and --resume", file=sys.stderr)
        return 1
    if result["status"] != "finished":
        print(f"\ncomparison interrupted after {result['wall_time_s']:.0f} s; continue it with the same command "
              "and --resume", file=sys.stderr)
        return 128 + (result.get("signal") or 2)
    print(format_answer(result))
    print(f"\nanswer: {exp_dir / 'compare.json'}\nreport: python -m sslray.report {exp_dir}")
    return 0


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.endswith((".yaml", ".yml"))


def prepare(args, overrides: list[str], files: list[str]):
    """Every check before anything starts: the arms load, share one budget, data and evaluation; the
    name and output are usable; a --resume asks exactly what the first run asked."""
    from sslray.compare.run import check_arms
    from sslray.config import ConfigError
    from sslray.search.space import load_search_space
    from sslray.search.checks import check_data_here, check_experiment

    if len(files) < 2:
        raise ConfigError(f"arms: {len(files)} search-space file(s); allowed: two or more SPACE.yaml")
    names = [Path(f).stem for f in files]
    if len(set(names)) != len(names):
        raise ConfigError(f"arms: two files named {sorted(n for n in names if names.count(n) > 1)[0]!r}; "
                          "allowed: files with distinct names (an arm is named by its file stem)")
    check_experiment(args.name, args.output, args.num_cpus)
    if args.epochs:
        overrides = overrides + [f"train.epochs={args.epochs}"]
    arms = {}
    for name, path in zip(names, files):
        space = load_search_space(path, overrides)
        if args.trials:
            space.num_trials = args.trials
        arms[name] = space
    budget = check_arms(arms)
    exp_dir = Path(args.output).absolute() / args.name
    spec = {"arms": {n: str(Path(f).absolute()) for n, f in zip(names, files)}, "overrides": overrides,
            "budget": budget, "seeds": list(range(args.seeds)),
            "spaces": {n: s.to_record() for n, s in arms.items()},
            "command": "python -m sslray.compare " + " ".join(shlex.quote(a) for a in sys.argv[1:])}
    spec_file = exp_dir / "spec.json"
    if spec_file.exists() and not args.resume:
        raise ConfigError(f"--name: {exp_dir} already holds a comparison; allowed: --resume to continue it, or another --name")
    if args.resume:
        if not spec_file.exists():
            raise ConfigError(f"--resume: {exp_dir} holds no comparison to resume; allowed: the --output and --name of "
                              "an earlier comparison, or no --resume to start one")
        before = json.loads(spec_file.read_text())
        now = json.loads(json.dumps(spec, default=str))
        for key in ("arms", "overrides", "budget", "seeds", "spaces"):
            if before.get(key) != now[key]:
                raise ConfigError(f"--resume: the comparison's {key} differ from the ones it started with; allowed: "
                                  "the same files, overrides, --trials, --epochs and --seeds, or a new --name")
        spec["command"] = before["command"]
    # after the cheap checks (it may download the dataset); every arm has the same data section
    check_data_here(next(iter(arms.values())).base, args.address)
    return arms, spec, exp_dir


def format_answer(result: dict) -> str:
    lines = [f"{'arm':<16} {'collapse':>8} {'search s':>9} {'finals s':>9}  " +
             "  ".join(f"{m + ' (95% t)':>24}" for m in result["metrics"])]
    for a in result["arms"]:
        cells = []
        for m in result["metrics"]:
            s = a["summary"].get(m)
            cells.append(f"{100 * s['mean']:6.2f} [{100 * s['ci_low']:6.2f}, {100 * s['ci_high']:6.2f}]" if s else "n/a")
        lines.append(f"{a['name']:<16} {a['collapse_rate']:8.0%} {a['search_wall_s']:9.0f} {a['finals_wall_s']:9.0f}  "
                     + "  ".join(f"{c:>24}" for c in cells))
    for d in result["differences"]:
        lines.append(f"{d['a']} - {d['b']} {d['metric']}: {100 * d['diff']:+.2f} points, 95% Welch interval "
                     f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}], Welch p={d['welch_p']:.3g}, "
                     f"permutation p={d['permutation_p']:.3g}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
