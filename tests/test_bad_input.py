"""Bad input, class by class, through the real command lines.

The rule: a bad config, override, CLI argument or checkpoint gets ONE line on stderr,
``error: <field or file>: <what is wrong>; allowed: <what is allowed>``, exit code 2, no
traceback, before any work starts -- and nothing is left on disk.
"""
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import sslray
from conftest import tiny_config
from sslray.checkpoint import CheckpointError, load_checkpoint

ONE_LINE = re.compile(r"^error: \S.*; allowed: .+")
NO_CUDA = {"CUDA_VISIBLE_DEVICES": ""}  # CUDA unavailable in the subprocess, on any machine


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A real one-epoch checkpoint of the tiny config, and broken files made from it."""
    from sslray.train import main as train_main

    d = tmp_path_factory.mktemp("ckpts")
    cfg = tiny_config(d)
    cfg["train"]["epochs"] = 1
    (d / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert train_main([str(d / "c.yaml")]) == 0
    good = d / "good.pt"
    shutil.copy(d / "runs" / "t" / "checkpoints" / "epoch_0001.pt", good)
    data = good.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "text.pt").write_text("this is not a checkpoint\n")
    torch.save({"weights": torch.zeros(2)}, d / "foreign.pt")  # a torch file, not sslray's
    state = torch.load(good, weights_only=True)
    torch.save({**state, "format": 99}, d / "format99.pt")
    torch.save({k: v for k, v in state.items() if k != "model"}, d / "no_model.pt")
    (d / "empty_dir").mkdir()
    return d


def _cfg(tmp_path, tiny_cfg):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_cfg))
    return str(path)


# (id, CLI, arguments with {cfg} / {ckpts} / {tmp} placeholders, text the line must contain, extra env):
# one case per class of bad input, through the real command line (each ~2 s: keep the list short)
CASES = [
    ("unknown-key", "train", ["{cfg}", "train.bogus=1"], "train: unknown key(s) bogus", {}),
    ("wrong-type", "train", ["{cfg}", "train.epochs=abc"], "train.epochs: 'abc' is not an integer", {}),
    ("out-of-range", "train", ["{cfg}", "optim.lr=-1"], "optim.lr: -1.0 is out of range", {}),
    ("bad-choice", "train", ["{cfg}", "loss.name=swav2"], "loss.name: 'swav2' is not allowed", {}),
    ("bad-override-syntax", "train", ["{cfg}", "train.epochs"], "override 'train.epochs': no key=value", {}),
    ("missing-config", "train", ["{tmp}/nope.yaml"], "config file {tmp}/nope.yaml: not found", {}),
    ("folder-as-config", "train", ["{tmp}"], "config file {tmp}: is a folder", {}),
    ("invalid-yaml", "train", ["{tmp}/bad.yaml"], "config file {tmp}/bad.yaml: not valid YAML (line 1, column 14", {}),
    ("views-too-small", "train", ["{cfg}", "views.size=8"],
     "views.size: 8 is too small for model.encoder=small_cnn", {}),
    ("resume-auto-without-run-name", "train", ["{cfg}", "train.resume=auto", "train.run_name=null"],
     "train.resume: 'auto' needs train.run_name", {}),
    ("resume-text-file", "train", ["{cfg}", "train.resume={ckpts}/text.pt"],
     "train.resume: {ckpts}/text.pt: not an sslray checkpoint", {}),
    ("resume-truncated", "train", ["{cfg}", "train.resume={ckpts}/truncated.pt"],
     "train.resume: {ckpts}/truncated.pt: not an sslray checkpoint (truncated or corrupt file)", {}),
    ("resume-wrong-model", "train", ["{cfg}", "train.resume={ckpts}/good.pt", "model.width=8"],
     "train.resume: {ckpts}/good.pt was trained with model.width=4; this config has 8", {}),
    ("resume-wrong-loss-ray-path", "train",  # checked in main, before Ray starts
     ["{cfg}", "train.resume={ckpts}/good.pt", "loss.name=barlow", "--workers", "1"],
     "was trained with loss.name=vicreg; this config has barlow", {}),
    ("cuda-not-available", "train", ["{cfg}", "train.device=cuda"], "train.device: cuda is not available", NO_CUDA),
    ("bad-flag", "train", ["{cfg}", "--bogus"], "--bogus: unknown argument(s)", {}),
    ("negative-workers", "train", ["{cfg}", "--workers", "-1"], "--workers: -1 is out of range", {}),
    ("eval-text-file", "eval", ["{ckpts}/text.pt"], "checkpoint: {ckpts}/text.pt: not an sslray checkpoint", {}),
    ("eval-truncated", "eval", ["{ckpts}/truncated.pt"], "(truncated or corrupt file)", {}),
    ("eval-wrong-method", "eval", ["{ckpts}/good.pt", "loss.name=byol"],  # its target network is not in the file
     "loss.name: byol differs from the checkpoint's vicreg", {}),
    ("eval-wrong-model", "eval", ["{ckpts}/good.pt", "model.projector=64-64"],
     "model.projector: 64-64 differs from the checkpoint's 32-32", {}),
    ("eval-bad-device", "eval", ["{ckpts}/good.pt", "--device", "tpu"], "--device: 'tpu' is not allowed", {}),
    ("eval-cuda-not-available", "eval", ["{ckpts}/good.pt", "--device", "cuda"],
     "--device: cuda is not available", NO_CUDA),
    ("eval-output-folder-missing", "eval", ["{ckpts}/good.pt", "--output", "{tmp}/no/such/r.json"],
     "--output: folder {tmp}/no/such does not exist", {}),
]


def _fill(args, tmp_path, tiny_cfg, ckpts):
    (tmp_path / "bad.yaml").write_text("train: epochs: 5\n")
    fill = {"cfg": _cfg(tmp_path, tiny_cfg), "ckpts": str(ckpts), "tmp": str(tmp_path)}
    return [a.format(**fill) for a in args], fill


def _check(returncode, stderr, expect, tmp_path):
    lines = stderr.splitlines()
    assert returncode == 2, stderr
    assert len(lines) == 1 and ONE_LINE.match(lines[0]), stderr
    assert expect in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not (tmp_path / "runs").exists()  # the config's train.output_dir: no run directory
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("cli, args, expect, env", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, tiny_cfg, ckpts, cli, args, expect, env):
    argv, fill = _fill(args, tmp_path, tiny_cfg, ckpts)
    proc = subprocess.run([sys.executable, "-m", f"sslray.{cli}", *argv], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, **env}, timeout=120)
    _check(proc.returncode, proc.stderr, expect.format(**fill), tmp_path)
    assert proc.stdout == ""


# More of each class, in-process (the CLIs' main functions; no interpreter start-up per case).
MORE = [
    ("unknown-section", "train", ["{cfg}", "bogus.x=1"], "config: unknown key(s) bogus"),
    ("section-not-a-mapping", "train", ["{cfg}", "train=5"], "train: 5 is not a mapping"),
    ("view-not-a-mapping", "train", ["{cfg}", "views.crops.0=5"], "views.crops.0: 5 is not a mapping"),
    ("list-expected", "train", ["{cfg}", "views.crops.0.crop_scale=0.5"], "views.crops.0.crop_scale: 0.5 is not a list"),
    ("loss-param-out-of-range", "train", ["{cfg}", "loss.name=tico", "loss.params.beta=1.5"], "loss.params: beta"),
    ("loss-param-unknown", "train", ["{cfg}", "loss.params.gamma=1"], "loss.params: unknown parameter(s) gamma"),
    ("limit-and-fraction", "train", ["{cfg}", "data.limit=10", "data.fraction=0.5"], "data.limit / data.fraction"),
    ("train-path-required", "train", ["{cfg}", "data.source=parquet"], "data.train_path: required"),
    ("override-bad-yaml", "train", ["{cfg}", "train.epochs=["], "override 'train.epochs=[': the value is not valid"),
    ("override-into-a-value", "train", ["{cfg}", "train.epochs.x=1"],
     "override train.epochs.x: epochs is not a section"),
    ("checkpoint-as-config", "train", ["{ckpts}/good.pt"], "not a text file"),
    ("list-as-config", "train", ["{tmp}/list.yaml"], "the top level is a list"),
    ("resume-empty-folder", "train", ["{cfg}", "train.resume={ckpts}/empty_dir"], "a folder without epoch_NNNN.pt"),
    ("resume-wrong-optimizer", "train", ["{cfg}", "train.resume={ckpts}/good.pt", "optim.name=sgd"],
     "was trained with optim.name=adamw; this config has sgd"),
    ("workers-not-an-integer", "train", ["{cfg}", "--workers", "x"], "--workers: 'x' is not an integer"),
    ("no-arguments", "train", [], "config: missing"),
    ("eval-foreign-torch-file", "eval", ["{ckpts}/foreign.pt"], "no 'format' key"),
    ("eval-missing", "eval", ["{tmp}/nope.pt"], "checkpoint: {tmp}/nope.pt: not found"),
    ("eval-bad-override", "eval", ["{ckpts}/good.pt", "eval.knn_k=0"], "eval.knn_k: 0 is out of range"),
    ("eval-output-is-a-folder", "eval", ["{ckpts}/good.pt", "--output", "{tmp}"], "--output: {tmp} is a folder"),
    ("eval-bad-flag", "eval", ["{ckpts}/good.pt", "--outptu", "x"], "--outptu x: unknown argument(s)"),
]


@pytest.mark.parametrize("cli, args, expect", [c[1:] for c in MORE], ids=[c[0] for c in MORE])
def test_more_bad_input_in_process(tmp_path, tiny_cfg, ckpts, capsys, monkeypatch, cli, args, expect):
    from sslray.eval.__main__ import main as eval_main
    from sslray.train import main as train_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    argv, fill = _fill(args, tmp_path, tiny_cfg, ckpts)
    try:
        code = {"train": train_main, "eval": eval_main}[cli](argv)
    except SystemExit as e:  # argparse's way out
        code = e.code
    _check(code, capsys.readouterr().err, expect.format(**fill), tmp_path)


@pytest.mark.parametrize("argv, line", [
    (["--device", "tpu", "x"], "error: --device: 'tpu' is not allowed; allowed: auto, cpu, cuda; see --help"),
    (["--epochs", "two", "x"], "error: --epochs: 'two' is not an integer; allowed: an integer; see --help"),
    (["--workers", "-2", "x"], "error: --workers: -2 is out of range; allowed: >= 0; see --help"),
    (["x", "--bogus"], "error: --bogus: unknown argument(s); allowed: prog [-h] [--device {auto,cpu,cuda}] "
                       "[--epochs EPOCHS] [--workers WORKERS] [--output OUTPUT] config [overrides ...]; see --help"),
    ([], "error: config: missing; allowed: prog [-h]"),
    (["x", "--output"], "error: --output: expected one argument; allowed: prog [-h]"),
])
def test_argument_parser_errors_are_one_line(capsys, argv, line):
    from sslray.cli import ArgumentParser, int_at_least

    parser = ArgumentParser(prog="prog")
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--workers", type=int_at_least(0))
    parser.add_argument("--output")
    with pytest.raises(SystemExit) as exit_:
        parser.parse_intermixed_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith(line) and ONE_LINE.match(err), err
    assert err.rstrip().endswith("; see --help")


@pytest.mark.parametrize("name, problem", [
    ("text.pt", "not a torch zip file"),
    ("truncated.pt", "truncated or corrupt file"),
    ("foreign.pt", "no 'format' key"),
    ("format99.pt", "format 99"),
    ("no_model.pt", "no 'model'"),
    ("empty_dir", "a folder without epoch_NNNN.pt"),
    ("missing.pt", "not found"),
])
def test_load_encoder_on_a_bad_file_raises_checkpoint_error(ckpts, name, problem):
    with pytest.raises(CheckpointError) as err:
        sslray.load_encoder(ckpts / name)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)  # what library users catch
    assert msg.startswith(f"{ckpts / name}: ") and problem in msg and "; allowed: " in msg and "\n" not in msg, msg
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpts / name)


def test_uris_that_are_not_checkpoints_raise_checkpoint_error(ckpts, tmp_path, monkeypatch):
    """Storage and MLflow URIs: named as given (not as the temporary copy), one line."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for uri, problem in [
        (f"file://{ckpts / 'text.pt'}", "not an sslray checkpoint (not a torch zip file)"),
        (f"file://{ckpts / 'missing.pt'}", "not found"),
        ("nosuchfs://bucket/x.pt", "cannot be read (Unrecognized filesystem type"),
        ("models:/sslray-nope", "a model URI needs a version or an alias"),
        ("models:/sslray-nope@best", "MLflow cannot resolve it (Registered Model with name=sslray-nope not found)"),
    ]:
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(uri)
        assert str(err.value).startswith(f"{uri}: {problem}") and "\n" not in str(err.value), str(err.value)


def test_checkpoint_error_names_the_argument_and_survives_pickling(ckpts):
    """Ray ships a worker's exception by pickle: the message must come back whole."""
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpts / "text.pt")
    named = err.value.named("train.resume")
    assert str(named) == f"train.resume: {err.value}"
    again = pickle.loads(pickle.dumps(named))
    assert type(again) is CheckpointError and str(again) == str(named)


def test_good_checkpoint_still_loads_and_resumes(ckpts, tmp_path, tiny_cfg):
    """The checks reject only what is wrong: the same checkpoint resumes a run of the same model."""
    from sslray.train import main as train_main

    enc = sslray.load_encoder(ckpts / "good.pt")
    assert enc(torch.randn(2, 3, 16, 16)).shape == (2, 32)
    cfg = _cfg(tmp_path, tiny_cfg)
    assert train_main([cfg, f"train.resume={ckpts / 'good.pt'}", "train.epochs=2", "eval.every=0"]) == 0
    assert [p.name for p in (tmp_path / "runs" / "t" / "checkpoints").iterdir()] == ["epoch_0002.pt"]


def test_eval_on_data_with_another_class_count_loads_the_checkpoint(ckpts):
    """Data overrides are allowed in eval: the online probe (sized by the training data's classes)
    must not make loading fail when the evaluation data has another class count."""
    from sslray.eval.offline import evaluate_checkpoint

    res = evaluate_checkpoint(str(ckpts / "good.pt"), ["data.synthetic_classes=5", "eval.probe_epochs=1"])
    assert res["epoch"] == 1 and 0 <= res["knn_top1"] <= 1


@pytest.mark.parametrize("cmd", [
    ["sslray.tune", "search_spaces/quickstart.yaml"],
    ["sslray.compare", "search_spaces/cpu_vicreg.yaml", "search_spaces/cpu_vicreg_tico.yaml"],
])
def test_missing_dataset_is_refused_before_a_search_or_comparison_starts(tmp_path, cmd):
    """Every trial would fail on it (and a search used to exit 0 after all of them had): one line
    naming data.root, exit 2, nothing written."""
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", *cmd, f"data.root={tmp_path / 'none'}", "data.download=false",
                           "--output", str(tmp_path / "out")], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: data.root: no local copy of cifar10") and "; allowed:" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
