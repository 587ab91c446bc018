"""``python -m sslray.distill TEACHER [key.sub=value ...] [options]``: SimCLRv2's semi-supervised
fine-tuning and distillation of a pretrained encoder.

TEACHER is what ``python -m sslray.eval`` takes: a checkpoint file, a run directory (its latest
checkpoint), a Ray checkpoint folder, or an MLflow URI of a search's best encoder
(``models:/sslray-NAME@best``, with --tracking-uri). Three steps (see sslray.distill):

1. fine-tune the teacher -- encoder, the projector's first layer and a new linear classifier --
   with labels, on a class-stratified --label-fraction of the training split;
2. distil it into a student (--student-encoder, default the teacher's) on the whole training
   split without labels, from the teacher's softmax at --temperature (plus --alpha times the
   cross-entropy on the labelled images);
3. evaluate on the test split: both classifiers' top-1, and the student's encoder by kNN and
   linear probe as ``python -m sslray.eval`` evaluates every encoder.

Writes --output/ (checkpoint.pt: the student, which sslray.eval and sslray.load_encoder read like
any checkpoint; summary.json; log.txt), one MLflow run (sslray.distill.tracking), and prints the
summary as JSON. Overrides change the data or the evaluation (``data.root=...``,
``data.limit=...``, ``eval.probe_epochs=...``, ``train.seed=...``), never the teacher's model.
Bad arguments, overrides, checkpoints or data fail before any work: one line on stderr, exit code
2, nothing written.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sslray.cli import ArgumentParser, add_knob_flags, fail, int_at_least
from sslray.config import Config, ConfigError
from sslray.distill.stages import Settings
from sslray.tracking import env_uri, is_model_uri, quieten, sqlite_file, store_uri, tags, use_by_default

OUTPUT_ALLOWED = "allowed: a new or empty folder"


def build_parser() -> ArgumentParser:
    from sslray.models import ENCODERS

    p = ArgumentParser(prog="python -m sslray.distill",
                       description="SimCLRv2's semi-supervised fine-tuning and distillation of a pretrained encoder.")
    p.add_argument("teacher", help="checkpoint file, run directory, Ray checkpoint folder or MLflow URI "
                                    "(models:/NAME@best, runs:/RUN_ID)")
    p.add_argument("overrides", nargs="*",
                   help="key.sub=value overrides of the data and evaluation, e.g. data.root=DIR")
    p.add_argument("--recipe", help="a YAML of these settings (e.g. sslray/recipes/cifar10_simclrv2_distill.yaml); "
                                    "a flag given here overrides its value")
    p.add_argument("--student-encoder", choices=ENCODERS, help="default: the teacher's encoder")
    p.add_argument("--student-width", type=int_at_least(1),
                   help="small_cnn students: base width (default: the teacher's)")
    add_knob_flags(p, Settings)  # one flag per setting: type, bounds and help from its declaration
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto | cpu | cuda")
    p.add_argument("--output", help="output folder, new or empty (default: runs/distill-<time>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                          "<output>/mlflow.db); also where a models:/ or runs:/ teacher is looked up")
    p.add_argument("--experiment", default="sslray-distill", help="MLflow experiment name (default sslray-distill)")
    return p


@dataclass
class Plan:
    """Everything a distillation needs, checked: what :func:`prepare` hands to :func:`run`."""

    source: str
    state: dict
    cfg: Config  # the teacher's config with the overrides: data, evaluation, seed, device
    student_cfg: Config
    settings: Settings
    output: Path
    tracking_uri: str
    experiment: str
    overrides: list[str]
    train: Any  # sslray.data.ImageData
    test: Any
    labelled: torch.Tensor  # indices into train


# ------------------------------------------------------------------------------------ checks
def check_output(output: Path) -> None:
    if output.is_file():
        raise ConfigError(f"--output: {output} is a file; {OUTPUT_ALLOWED}")
    if output.is_dir() and any(output.iterdir()):
        raise ConfigError(f"--output: {output} already holds files; {OUTPUT_ALLOWED}")


def check_tracking(args, output: Path) -> str:
    """The run's tracking URI; a models:/ or runs:/ teacher needs an existing store to look in."""
    given = args.tracking_uri or env_uri()
    if is_model_uri(args.teacher):
        if not given:
            raise ConfigError(f"--tracking-uri: required for the MLflow teacher {args.teacher}; allowed: the tracking "
                              "URI it was logged to, e.g. sqlite:///$PWD/experiments/NAME/mlflow.db")
        db = sqlite_file(given)
        if db is not None and not db.is_file():  # MLflow would create an empty store there
            raise ConfigError(f"--tracking-uri: {db} does not exist; allowed: the tracking URI {args.teacher} was "
                              "logged to")
    uri = store_uri(args.tracking_uri, output)
    db = sqlite_file(uri)
    if db is not None and not db.parent.is_dir() and not db.parent.absolute() == output.absolute():
        where = "--tracking-uri" if args.tracking_uri else "$MLFLOW_TRACKING_URI"
        raise ConfigError(f"{where}: folder {db.parent} does not exist; allowed: a SQLite file in an existing "
                          "folder, or a tracking server")
    return uri


def distill_settings(args) -> Settings:
    """The settings: their declared defaults, then the --recipe file's, then the flags given."""
    from sslray.config import load_knobs, read_yaml

    values = {}
    if args.recipe:
        values = read_yaml(Path(args.recipe), "--recipe", "a mapping of distillation settings")
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if hasattr(args, f.name)})
    return load_knobs(Settings, values, f"--recipe {args.recipe}" if args.recipe else "settings")


def student_config(cfg: Config, encoder: str | None, width: int | None) -> Config:
    """The teacher's config with the student's encoder (and width): what the student checkpoint records."""

    encoder = encoder or cfg.model.encoder
    if width is not None and encoder != "small_cnn":
        raise ConfigError(f"--student-width: {encoder} has no width setting; allowed: --student-width only with "
                          "--student-encoder small_cnn")
    try:
        return cfg.updated({"model.encoder": encoder, "model.width": width or cfg.model.width})
    except ConfigError as e:  # e.g. views.size too small for that encoder
        raise ConfigError(f"--student-encoder: {e}") from None


def prepare(args) -> Plan:
    """Read and check everything -- arguments, teacher checkpoint, configs, data -- writing nothing."""
    from sslray import data as data_mod
    from sslray.checkpoint import CheckpointError, check_same_model, load_checkpoint, saved_config
    from sslray.config import absolute_overrides, load_config, parse_overrides

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda is not available on this machine; allowed: cpu, auto")
    settings = distill_settings(args)  # first: a recipe is cheaper to judge than a teacher
    output = Path(args.output or f"runs/distill-{time.strftime('%Y%m%d-%H%M%S')}")
    check_output(output)
    uri = check_tracking(args, output)
    if is_model_uri(args.teacher):
        use_by_default(args.tracking_uri or env_uri())
    try:
        state = load_checkpoint(args.teacher)
        saved = saved_config(state, args.teacher)
    except CheckpointError as e:
        raise e.named("teacher") from None
    overrides = absolute_overrides(args.overrides)
    # in this process, on the chosen device: a GPU recipe's scale settings must not refuse --device cpu
    cfg = load_config(state["config"], {**parse_overrides(overrides), "train.device": args.device,
                                        "scale.workers": 0, "scale.use_gpu": False})
    check_same_model(saved, cfg)
    student_cfg = student_config(cfg, args.student_encoder, args.student_width)
    seed = cfg.train.seed
    train = data_mod.load_split(cfg.data, "train", seed=seed)
    test = data_mod.load_split(cfg.data, "test", seed=seed)
    n_labelled = round(settings.label_fraction * len(train))
    if n_labelled < 2:
        raise ConfigError(f"--label-fraction: {settings.label_fraction:g} of the {len(train)} training images is "
                          f"{n_labelled} image(s); allowed: a fraction giving at least 2 labelled images")
    labelled = data_mod.stratified_subset(train.labels, n_labelled, seed)
    return Plan(args.teacher, state, cfg, student_cfg, settings, output, uri, args.experiment, overrides, train, test,
                labelled)


# --------------------------------------------------------------------------------------- run
class Log:
    """Lines on the terminal and in <output>/log.txt."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")


def run_params(plan: Plan, finetune_from: str, rt) -> dict[str, Any]:
    """Exactly what runs: the MLflow run's parameters, also in summary.json and the checkpoint."""
    s, cfg, student = plan.settings, plan.cfg, plan.student_cfg.model
    return {
        "teacher": plan.source, "teacher_epoch": plan.state["epoch"], "teacher_method": cfg.loss.name,
        "teacher_encoder": cfg.model.encoder, "teacher_projector": cfg.model.projector, "finetune_from": finetune_from,
        "label_fraction": s.label_fraction, "labelled_images": len(plan.labelled), "train_images": len(plan.train),
        "test_images": len(plan.test), "temperature": s.temperature, "alpha": s.alpha,
        "finetune_epochs": s.finetune_epochs, "distill_epochs": s.distill_epochs, "batch_size": s.batch_size,
        "optimizer": s.optimizer, "momentum": s.momentum, "finetune_lr": s.finetune_lr, "finetune_weight_decay": 0.0,
        "distill_lr": s.distill_lr, "distill_weight_decay": s.weight_decay, "student_encoder": student.encoder,
        "student_width": student.width if student.encoder == "small_cnn" else None, "seed": cfg.train.seed,
        "device": str(rt.device), "precision": "bf16" if rt.amp_dtype else "fp32",
        "overrides": " ".join(plan.overrides),
        **{f"data.{k}": v for k, v in cfg.to_dict()["data"].items()},
        **{f"eval.{k}": getattr(cfg.eval, k)
           for k in ("knn_k", "knn_t", "knn_chunk", "probe_epochs", "probe_lr", "probe_batch_size", "feature_batch_size")},
    }


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def run(plan: Plan) -> dict[str, Any]:
    """Fine-tune, distil, evaluate; write the output folder and the MLflow run. Returns the summary."""
    from sslray.checkpoint import method_state, save_checkpoint
    from sslray.distill.networks import FineTuned, build_student
    from sslray.distill.stages import DISTILL, INIT, distill, evaluate, finetune, stream_seed
    from sslray.distill.tracking import DistillRun
    from sslray.loop import resolve_runtime
    from sslray.methods import build_method

    t_start = time.perf_counter()
    cfg, s, seed = plan.cfg, plan.settings, plan.cfg.train.seed
    rt = resolve_runtime(cfg)
    n_cls = len(plan.train.classes)
    torch.manual_seed(seed)
    teacher_method = build_method(cfg, plan.state.get("num_classes", n_cls))
    teacher_method.load_state_dict(method_state(plan.state))
    teacher = FineTuned(teacher_method, n_cls).to(rt.device)
    student_method, student = build_student(plan.student_cfg, n_cls, stream_seed(seed, DISTILL, INIT, 0))
    student_method.to(rt.device)
    if rt.channels_last:
        teacher, student = (m.to(memory_format=torch.channels_last) for m in (teacher, student))
    params = run_params(plan, teacher.from_layer, rt)

    plan.output.mkdir(parents=True, exist_ok=True)
    log = Log(plan.output / "log.txt")
    tracker = DistillRun(plan.tracking_uri, plan.experiment,
                         f"distill-{params['student_encoder']}-{s.label_fraction:g}",
                         {tags.TEACHER: plan.source}, params)
    history: dict[str, list[dict]] = {"finetune": [], "distill": []}
    try:
        log(f"teacher {plan.source} ({cfg.loss.name}, {cfg.model.encoder}, epoch {plan.state['epoch']}) | fine-tune "
            f"from {teacher.from_layer} on {len(plan.labelled)} labelled images ({s.label_fraction:g} of "
            f"{len(plan.train)}, class-stratified) | student {params['student_encoder']} | {rt.device}, "
            f"{params['precision']} | MLflow run {tracker.run_id}")
        train_images = plan.train.images.to(rt.device)
        lab_images = train_images[plan.labelled.to(rt.device)]
        lab_labels = plan.train.labels[plan.labelled].to(rt.device)

        def on_finetune(m: dict) -> None:
            history["finetune"].append(m)
            tracker.log_epoch(m, m["epoch"])
            log(f"finetune epoch {m['epoch']:>3}/{s.finetune_epochs} | loss {m['finetune_loss']:.4f} | acc "
                f"{_pct(m['finetune_acc'])} | lr {m['finetune_lr']:.3g} | {m['finetune_time_s']:.1f}s")

        def on_distill(m: dict) -> None:
            history["distill"].append(m)
            tracker.log_epoch(m, m["epoch"])
            ce = f" ce {m['distill_ce']:.4f}" if "distill_ce" in m else ""
            log(f"distill epoch {m['epoch']:>3}/{s.distill_epochs} | loss {m['distill_loss']:.4f}{ce} | agreement "
                f"{_pct(m['distill_agreement'])} | lr {m['distill_lr']:.3g} | {m['distill_time_s']:.1f}s")

        t0 = time.perf_counter()
        finetune(teacher, lab_images, lab_labels, cfg.views, s, rt, seed, on_finetune)
        t1 = time.perf_counter()
        distill(student, teacher, train_images, lab_images, lab_labels, cfg.views, s, rt, seed, on_distill)
        t2 = time.perf_counter()
        metrics = evaluate(teacher, student_method, plan.train, plan.test, cfg, rt.device)
        t3 = time.perf_counter()
        log(f"test | teacher fine-tuned {_pct(metrics['teacher_finetune_top1'])} | student "
            f"{_pct(metrics['student_top1'])}, kNN {_pct(metrics['student_knn_top1'])}, probe "
            f"{_pct(metrics['student_probe_top1'])} | {t3 - t2:.1f}s")

        checkpoint = save_checkpoint({
            "epoch": s.distill_epochs, "config": plan.student_cfg.to_dict(), "num_classes": n_cls,
            "model": {k: v.detach().cpu() for k, v in student_method.state_dict().items()},
            "metrics": metrics, "distill": params,
        }, plan.output / "checkpoint.pt")
        summary = {
            "status": "finished", "teacher": plan.source, "checkpoint": str(checkpoint.absolute()),
            "metrics": metrics, "params": params,
            "mlflow": {"tracking_uri": plan.tracking_uri, "experiment_id": tracker.experiment_id,
                       "run_id": tracker.run_id, "checkpoint_uri": f"runs:/{tracker.run_id}"},
            "time_s": {"finetune": t1 - t0, "distill": t2 - t1, "eval": t3 - t2,
                       "total": time.perf_counter() - t_start},
            "history": history,
        }
        note = (f"SimCLRv2 fine-tuning on {s.label_fraction:g} of the labels and distillation of `{plan.source}` "
                f"into a {params['student_encoder']} student. **Test top-1: teacher fine-tuned "
                f"{_pct(metrics['teacher_finetune_top1'])}, student {_pct(metrics['student_top1'])}** (kNN "
                f"{_pct(metrics['student_knn_top1'])}, linear probe {_pct(metrics['student_probe_top1'])}).")
        tracker.finish(metrics, checkpoint, plan.student_cfg.to_dict(), summary, note)
        tmp = plan.output / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, plan.output / "summary.json")
        return summary
    except BaseException as e:
        tracker.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # overrides may follow options

    from sslray.data import DataError
    from sslray.distill.stages import Diverged

    try:
        plan = prepare(args)
    except (ConfigError, DataError) as e:  # CheckpointError is a ConfigError, already named "teacher"
        return fail(str(e))
    quieten()  # a new SQLite store announces its tables on stderr: not news here
    try:
        summary = run(plan)
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
