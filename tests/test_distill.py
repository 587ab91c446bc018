"""SimCLRv2 fine-tuning + distillation (sslray.distill): the loss against an independent
computation, the labelled subset, what is fine-tuned, one run through the command line as a user
runs it (output folder, MLflow run, a student that loads and evaluates like any checkpoint), and
bad input (one line, exit 2, nothing written)."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import tiny_config
from sslray.distill import FineTuned, distillation_loss, first_projector_block

pytestmark = pytest.mark.usefixtures("one_thread")

ONE_LINE = re.compile(r"^error: \S.*; allowed: .+")
FAST = ["--finetune-epochs", "2", "--distill-epochs", "2", "--batch-size", "32", "train.num_threads=1",
        "eval.probe_epochs=5"]


# ------------------------------------------------------------------------------------------ loss
def _reference(student, teacher, t):
    """-(1/n) sum_i sum_y P_T(y|x_i; t) log P_S(y|x_i; t), in float64 Python arithmetic."""
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zt = sum(math.exp(v / t) for v in t_row)
        log_zs = math.log(sum(math.exp(v / t) for v in s_row))
        total -= sum(math.exp(tv / t) / zt * (sv / t - log_zs) for sv, tv in zip(s_row, t_row))
    return total / len(student)


@pytest.mark.parametrize("t", [1.0, 0.5, 3.0])
def test_distillation_loss_value_and_gradient_match_an_independent_computation(t):
    g = torch.Generator().manual_seed(0)
    student = (3 * torch.randn(6, 5, generator=g, dtype=torch.float64)).requires_grad_()
    teacher = (3 * torch.randn(6, 5, generator=g, dtype=torch.float64)).requires_grad_()
    loss = distillation_loss(student, teacher, temperature=t)
    assert loss.item() == pytest.approx(_reference(student.detach(), teacher.detach(), t), rel=1e-12)
    loss.backward()
    # d/ds_i = (softmax(s_i / t) - softmax(t_i / t)) / (t * n); the teacher is a fixed target
    expected = (torch.softmax(student.detach() / t, 1) - torch.softmax(teacher.detach() / t, 1)) / (t * 6)
    torch.testing.assert_close(student.grad, expected, rtol=1e-10, atol=1e-12)
    assert teacher.grad is None


def test_distillation_loss_by_hand_and_temperature_scaling():
    # uniform student over 2 classes: log P_S = log 1/2 for any target, at any temperature
    s, tch = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    for t in (1.0, 2.0, 0.1):
        assert distillation_loss(s, tch, t).item() == pytest.approx(math.log(2), rel=1e-6)
    # P_T = (3/4, 1/4) at T = 1; a student equal to the teacher scores the teacher's entropy
    assert distillation_loss(tch, tch, 1.0).item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-6)
    # T divides both logits: loss(s, t, T) = loss(s / T, t / T, 1)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    assert distillation_loss(a, b, 2.5).item() == pytest.approx(distillation_loss(a / 2.5, b / 2.5, 1.0).item(), rel=1e-6)
    # the minimum over students is at the teacher (gradient zero there), and a higher T flattens the target
    same = b.clone().requires_grad_()
    distillation_loss(same, b, 2.0).backward()
    assert same.grad.abs().max() < 1e-7
    assert distillation_loss(b, b, 4.0) > distillation_loss(b, b, 1.0)  # entropy of a flatter target
    # bf16 logits (autocast) are computed in fp32
    assert distillation_loss(a.bfloat16(), b.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("s_shape, t_shape, temperature", [((4, 3), (4, 2), 1.0), ((4,), (4,), 1.0),
                                                           ((4, 3), (4, 3), 0.0), ((4, 3), (4, 3), -1.0)])
def test_distillation_loss_refuses_bad_shapes_and_temperatures(s_shape, t_shape, temperature):
    with pytest.raises(ValueError):
        distillation_loss(torch.zeros(s_shape), torch.zeros(t_shape), temperature)


# ------------------------------------------------------------------------------- teacher fixture
@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A one-epoch SimCLR checkpoint of the tiny synthetic config with a 3-layer projector."""
    from sslray.train import main as train_main

    d = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config(d)
    cfg["loss"] = {"name": "simclr"}
    cfg["model"]["projector"] = "32-32-16"
    cfg["train"].update(epochs=1, num_threads=1)
    cfg["eval"]["every"] = 0
    (d / "c.yaml").write_text(yaml.safe_dump(cfg))
    threads = torch.get_num_threads()
    try:
        assert train_main([str(d / "c.yaml")]) == 0
    finally:
        torch.set_num_threads(threads)
    (d / "text.pt").write_text("not a checkpoint\n")
    return d / "runs" / "t" / "checkpoints" / "epoch_0001.pt"


def _prepare(teacher, tmp_path, *extra):
    from sslray.distill.__main__ import build_parser, prepare

    return prepare(build_parser().parse_intermixed_args([str(teacher), "--output", str(tmp_path / "out"), *extra]))


def test_labelled_fraction_is_class_stratified_and_sized(teacher, tmp_path):
    plan = _prepare(teacher, tmp_path, "--label-fraction", "0.25", "data.synthetic_train_size=250")
    labels = plan.train.labels
    assert len(plan.train) == 250 and len(plan.labelled) == round(0.25 * 250)
    assert len(set(plan.labelled.tolist())) == len(plan.labelled)  # no image twice
    per_class = labels[plan.labelled].bincount(minlength=10)
    expected = labels.bincount(minlength=10) * 0.25
    assert (per_class - expected).abs().max() < 1, (per_class, expected)  # largest-remainder rounding
    again = _prepare(teacher, tmp_path, "--label-fraction", "0.25", "data.synthetic_train_size=250")
    assert torch.equal(again.labelled, plan.labelled)  # seeded: the same subset every time
    assert not (tmp_path / "out").exists()  # preparing writes nothing


# ---------------------------------------------------------------------------- what is fine-tuned
def test_finetuning_trains_the_projectors_first_layer_and_never_uses_the_rest(teacher, tmp_path):
    from sslray.distill.stages import finetune
    from sslray.checkpoint import method_state
    from sslray.loop import resolve_runtime
    from sslray.methods import build_method

    plan = _prepare(teacher, tmp_path, "--finetune-epochs", "2", "--batch-size", "32", "train.num_threads=1")
    method = build_method(plan.cfg, 10)
    method.load_state_dict(method_state(plan.state))
    net = FineTuned(method, 10)
    # encoder -> Linear(32, 32)-BN-ReLU of the projector (the same modules) -> Linear(32, 10)
    assert net.from_layer == "projector.0" and net.head[0] is method.projector[0] and net.head[1] is method.projector[1]
    assert net.classifier.in_features == 32 and net.classifier.weight.abs().sum() == 0  # zero-initialised
    owned = {id(p) for p in net.parameters()}
    later = list(method.projector.children())[3:]  # the head's later layers
    assert all(id(p) not in owned for layer in later for p in layer.parameters())
    before = {k: v.clone() for k, v in method.state_dict().items()}
    calls = []
    method.projector[3].register_forward_hook(lambda *a: calls.append(1))
    images = plan.train.images[plan.labelled]
    finetune(net, images, plan.train.labels[plan.labelled], plan.cfg.views, plan.settings, resolve_runtime(plan.cfg),
             0, lambda m: None)
    after = method.state_dict()
    for key in ("projector.0.weight", "projector.1.weight", "encoder.0.weight"):
        assert not torch.equal(before[key], after[key]), key  # fine-tuned
    for key in ("projector.3.weight", "projector.4.weight", "projector.6.weight"):
        assert torch.equal(before[key], after[key]), key  # not part of the network
    assert calls == []


def test_a_one_layer_projector_fine_tunes_from_the_encoder_output(tiny_cfg):
    from sslray.config import load_config
    from sslray.methods import build_method

    tiny_cfg["model"]["projector"] = "16"
    method = build_method(load_config(tiny_cfg), 10)
    assert first_projector_block(method.projector) is None
    net = FineTuned(method, 10)
    assert net.from_layer == "encoder" and isinstance(net.head, torch.nn.Identity)
    assert net.classifier.in_features == method.encoder.out_dim
    assert net(torch.randn(4, 3, 16, 16)).shape == (4, 10)


# ------------------------------------------------------------------------------ end to end, CLI
def test_cli_run_writes_student_summary_and_mlflow_run_and_the_student_evaluates_like_any_checkpoint(teacher,
                                                                                                   tmp_path):
    from mlflow.tracking import MlflowClient

    import sslray
    from sslray.checkpoint import load_checkpoint
    from sslray.eval.offline import evaluate_checkpoint

    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-m", "sslray.distill", str(teacher), "--output", str(out),
                           "--tracking-uri", uri, "--experiment", "e", "--label-fraction", "0.25",
                           "--student-encoder", "small_cnn", "--student-width", "2", "--temperature", "2", *FAST],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finetune epoch   2/2" in proc.stdout and "distill epoch   2/2" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "log.txt", "summary.json"]  # store elsewhere
    summary = json.loads((out / "summary.json").read_text())
    m = summary["metrics"]
    finals = ("teacher_finetune_top1", "student_top1", "student_knn_top1", "student_probe_top1")
    for key in finals:
        assert isinstance(m[key], float) and 0 <= m[key] <= 1, key  # fractions, as sslray.eval reports
    p = summary["params"]
    assert p["label_fraction"] == 0.25 and p["labelled_images"] == 64 and p["temperature"] == 2.0
    assert p["teacher"] == str(teacher) and p["finetune_from"] == "projector.0" and p["student_width"] == 2
    assert [r["epoch"] for r in summary["history"]["distill"]] == [1, 2]

    # the MLflow run: FINISHED, the parameters that ran, per-epoch and final metrics, the student
    client = MlflowClient(uri)
    run = client.get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["sslray.role"] == "distill"
    assert client.get_experiment(run.info.experiment_id).name == "e"
    assert {k: run.data.params[k] for k in ("teacher", "label_fraction", "temperature", "alpha", "finetune_epochs",
                                             "distill_epochs", "student_encoder", "finetune_lr", "distill_lr",
                                             "seed")} == {
        "teacher": str(teacher), "label_fraction": "0.25", "temperature": "2.0", "alpha": "0.0",
        "finetune_epochs": "2", "distill_epochs": "2", "student_encoder": "small_cnn", "finetune_lr": "0.08",
        "distill_lr": "0.1", "seed": "0"}
    for key in finals:
        assert run.data.metrics[key] == pytest.approx(m[key])
    assert [x.step for x in client.get_metric_history(run.info.run_id, "finetune_loss")] == [1, 2]
    assert [x.step for x in client.get_metric_history(run.info.run_id, "distill_loss")] == [1, 2]
    assert "checkpoint/checkpoint.pt" in [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]

    # the student loads like any checkpoint -- from the folder, the file, and the MLflow run -- and
    # sslray.eval gives the kNN and probe the run reported
    state = load_checkpoint(out)
    assert state["config"]["model"]["width"] == 2 and state["epoch"] == 2
    encoder = sslray.load_encoder(out / "checkpoint.pt")
    assert encoder(torch.randn(2, 3, 16, 16)).shape == (2, 16)  # 8 x width 2
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        from_run = load_checkpoint(summary["mlflow"]["checkpoint_uri"])
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    assert torch.equal(from_run["model"]["encoder.0.weight"], state["model"]["encoder.0.weight"])
    res = evaluate_checkpoint(str(out / "checkpoint.pt"), ["eval.probe_epochs=5"], device="cpu")
    assert res["knn_top1"] == m["student_knn_top1"] and res["probe_test_top1"] == m["student_probe_top1"]


def test_alpha_adds_the_labelled_cross_entropy_and_the_default_store_is_in_the_output(teacher, tmp_path, monkeypatch,
                                                                                     capsys):
    from mlflow.tracking import MlflowClient

    from sslray.distill.__main__ import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        assert main([str(teacher), "--output", str(out), "--alpha", "0.5", *FAST]) == 0
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mlflow"]["tracking_uri"] == f"sqlite:///{out / 'mlflow.db'}" and (out / "mlartifacts").is_dir()
    assert all(math.isfinite(r["distill_ce"]) for r in summary["history"]["distill"])
    run = MlflowClient(summary["mlflow"]["tracking_uri"]).get_run(summary["mlflow"]["run_id"])
    assert run.data.params["alpha"] == "0.5" and "distill_ce" in run.data.metrics
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("\n{") + 1:])["metrics"] == summary["metrics"]  # the summary, as JSON


# ------------------------------------------------------------------------------------ bad input
# (id, arguments with {teacher} / {tmp} placeholders, text the line must contain)
CASES = [
    ("missing-teacher", ["{tmp}/nope.pt"], "teacher: {tmp}/nope.pt: not found"),
    ("not-a-checkpoint", ["{dir}/text.pt"], "teacher: {dir}/text.pt: not an sslray checkpoint (not a torch zip file)"),
    ("label-fraction-zero", ["{teacher}", "--label-fraction", "0"], "--label-fraction: 0 is out of range; allowed: (0, 1]"),
    ("unknown-student", ["{teacher}", "--student-encoder", "vit"],
     "--student-encoder: 'vit' is not allowed; allowed: resnet18, resnet50, small_cnn"),
]
MORE = [
    ("label-fraction-above-one", ["{teacher}", "--label-fraction", "1.5"], "--label-fraction: 1.5 is out of range"),
    ("label-fraction-nan", ["{teacher}", "--label-fraction", "nan"], "--label-fraction: nan is out of range"),
    ("label-fraction-not-a-number", ["{teacher}", "--label-fraction", "ten"], "--label-fraction: 'ten' is not a number"),
    ("too-few-labelled-images", ["{teacher}", "--label-fraction", "0.001"],
     "--label-fraction: 0.001 of the 256 training images is 0 image(s); allowed: a fraction giving at least 2"),
    ("temperature-zero", ["{teacher}", "--temperature", "0"], "--temperature: 0 is out of range; allowed: (0, inf)"),
    ("alpha-above-one", ["{teacher}", "--alpha", "2"], "--alpha: 2 is out of range; allowed: [0, 1]"),
    ("epochs-zero", ["{teacher}", "--distill-epochs", "0"], "--distill-epochs: 0 is out of range; allowed: >= 1"),
    ("width-without-small-cnn", ["{teacher}", "--student-encoder", "resnet18", "--student-width", "8"],
     "--student-width: resnet18 has no width setting"),
    ("student-too-big-for-the-views", ["{teacher}", "--student-encoder", "resnet18", "model.stem=imagenet"],
     "--student-encoder: views.size: 16 is too small for model.encoder=resnet18 with model.stem=imagenet"),
    ("override-changes-the-model", ["{teacher}", "model.width=8"], "model.width: 8 differs from the checkpoint's 4"),
    ("override-unknown-key", ["{teacher}", "data.bogus=1"], "data: unknown key(s) bogus"),
    ("missing-data", ["{teacher}", "data.source=cifar10", "data.root={tmp}/nodata", "data.download=false"],
     "data.root: no local copy of cifar10"),
    ("output-not-empty", ["{teacher}", "--output", "{dir}"], "--output: {dir} already holds files"),
    ("output-is-a-file", ["{teacher}", "--output", "{dir}/text.pt"], "--output: {dir}/text.pt is a file"),
    ("mlflow-teacher-without-store", ["models:/sslray-x@best"], "--tracking-uri: required for the MLflow teacher"),
    ("mlflow-teacher-store-missing", ["models:/sslray-x@best", "--tracking-uri", "sqlite:///{tmp}/none.db"],
     "--tracking-uri: {tmp}/none.db does not exist"),
    ("mlflow-teacher-not-registered", ["models:/sslray-x@best", "--tracking-uri", "sqlite:///{tmp}/empty.db"],
     "teacher: models:/sslray-x@best: MLflow cannot resolve it"),
    ("store-folder-missing", ["{teacher}", "--tracking-uri", "sqlite:///{tmp}/no/such/m.db"],
     "--tracking-uri: folder {tmp}/no/such does not exist"),
]


def _fill(args, teacher, tmp_path):
    fill = {"teacher": str(teacher), "dir": str(teacher.parents[3]), "tmp": str(tmp_path)}
    return [a.format(**fill) for a in args], fill


def _check(code, stderr, expect, tmp_path, before):
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and ONE_LINE.match(lines[0]) and "Traceback" not in stderr, stderr
    assert expect in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output folder, no mlflow.db, nothing


@pytest.mark.parametrize("args, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_through_the_command_line(teacher, tmp_path, args, expect):
    argv, fill = _fill(args, teacher, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "sslray.distill", *argv, "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    _check(proc.returncode, proc.stderr, expect.format(**fill), tmp_path, [])
    assert proc.stdout == ""


@pytest.mark.parametrize("args, expect", [c[1:] for c in MORE], ids=[c[0] for c in MORE])
def test_more_bad_input_in_process(teacher, tmp_path, monkeypatch, capsys, args, expect):
    from sslray.distill.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if "empty.db" in " ".join(args):  # an existing store without that model
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{tmp_path / 'empty.db'}").search_experiments()
        capsys.readouterr()  # MLflow's lines about creating it
    before = sorted(p.name for p in tmp_path.iterdir())
    argv, fill = _fill(args, teacher, tmp_path)
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "out")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's way out
        code = e.code
    finally:
        import mlflow

        mlflow.set_tracking_uri(None)  # a models:/ teacher sets the process's store (and its variable)
    _check(code, capsys.readouterr().err, expect.format(**fill), tmp_path, before)
