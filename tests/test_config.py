import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sslray.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
# pretraining recipes; *_distill.yaml are distillation recipes (tests/test_distill_recipe.py loads those)
ALL_YAML = sorted(p for p in (REPO / "sslray" / "recipes").glob("*.yaml") if not p.stem.endswith("_distill"))


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.name)
def test_every_recipe_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # the snapshot a run writes round-trips to the same config
    assert load_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


def test_recipes_exist():
    from sslray.methods import METHODS

    names = {p.stem for p in ALL_YAML}
    assert {"cifar10_cpu_vicreg", "smoke_synthetic"} | {f"cifar10_resnet18_{m}" for m in METHODS} <= names


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.epochs=7", "optim.lr=1e-3", "loss.name=tico", "loss.params.beta=0.5",
                             "views.crops.1.solarize_p=0.3", "train.channels_last=true"])
    assert cfg.train.epochs == 7 and cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.loss.params == {"beta": 0.5}
    assert cfg.views.crops[1].solarize_p == 0.3 and cfg.views.crops[0].solarize_p == 0.1  # preset default kept
    assert cfg.train.channels_last == "true"


def test_compile_takes_yaml_booleans_and_a_mode():
    assert load_config(None).train.compile == "false"
    assert load_config({"train": {"compile": True}}).train.compile == "true"  # YAML `compile: true`
    assert load_config(None, ["train.compile=false"]).train.compile == "false"
    assert load_config(None, ["train.compile=max-autotune"]).train.compile == "max-autotune"


def test_asymmetric_preset_and_explicit_override():
    cfg = load_config({"views": {"preset": "asymmetric", "crops": [{"blur_p": 0.5}, {}]}})
    assert (cfg.views.crops[0].blur_p, cfg.views.crops[1].blur_p) == (0.5, 0.1)
    assert (cfg.views.crops[0].solarize_p, cfg.views.crops[1].solarize_p) == (0.0, 0.2)
    # a config saved before crop groups (a checkpoint's, an old run's) still loads: view1/view2 are the two groups
    old = load_config({"views": {"preset": "asymmetric", "view1": {"blur_p": 0.5}, "view2": {}}})
    assert old.views == cfg.views


@pytest.mark.parametrize("overrides, field, allowed", [
    (["train.batch_size=1"], "train.batch_size", "[2, inf)"),
    (["loss.name=tico", "loss.params.beta=1.0"], "beta", "[0, 1)"),
    (["loss.name=vicreg_tico", "loss.params.beta=-0.1"], "beta", "[0, 1)"),
    (["loss.params.lam=-1"], "lam", ">= 0"),
    (["loss.params.gamma=3"], "gamma", "lam"),
    (["loss.name=vicreg_tico", "loss.params.nu=0.01", "loss.params.center=1"], "center: 1.0 is not true or false",
     "true, false"),
    (["loss.name=vicreg_tico", "loss.params.nu=0.01", "loss.params.offdiag=[1]"], "loss.params.offdiag",
     "a number or true/false"),
    (["loss.params.lam=true"], "lam: True is not a number", "a number"),
    (["loss.name=vicreg_tico"], "nu: None (VICReg-TiCo has no default nu", "near 1/dim = 0.000488"),
    (["loss.name=simclr2"], "loss.name", "vicreg"),
    (["model.encoder=vgg"], "model.encoder", "resnet18"),
    (["model.projector=12-x"], "model.projector", "2048-2048-2048"),
    (["optim.name=adam"], "optim.name", "lars"),
    (["train.device=tpu"], "train.device", "cuda"),
    (["train.compile=fast"], "train.compile: 'fast' is not allowed", "false, true, max-autotune"),
    (["train.compile=1"], "train.compile: 1 is not allowed", "false, true, max-autotune"),
    (["train.channels_last=1"], "train.channels_last: 1 is not allowed", "auto, true, false"),
    (["views.crops.0.hflip_p=1.5"], "views.crops.0.hflip_p", "[0, 1]"),
    (["views.crops.0.crop_scale=[0.5, 0.2]"], "views.crops.0.crop_scale[1]", "[0.5, 1]"),
    (["views.crops.1.count=0"], "views.crops.1.count", "[1, inf)"),
    (["views.crops.2.count=2"], "views.crops: vicreg takes 2 crops per image, these groups give 4 (1 + 1 + 2)",
     "allowed: counts summing to 2"),
    (["model.encoder=small_cnn", "views.crops.1.size=12"], "views.crops.1.size: 12 is too small", ">= 16"),
    (["views.crops=[]"], "views.crops", "a non-empty list"),
    (["views.crops.x=1"], "views.crops is a list", "an index"),
    (["data.source=imagenet"], "data.source", "parquet"),
    (["data.source=parquet"], "data.train_path", "required"),
    (["data.fraction=0"], "data.fraction", "(0, 1]"),
    (["train.epochs=abc"], "train.epochs", "integer"),
    (["train.bogus=1"], "train", "batch_size"),
    (["bogus.x=1"], "config", "train"),
    (["train=3"], "train", "a mapping of batch_size"),
    (["train.num_threads=x"], "train.num_threads", "an integer or null"),
    (["optim.lr=x"], "optim.lr", "a number"),
    (["model.sync_batchnorm=2"], "model.sync_batchnorm", "true, false"),
    (["views.crops.0.crop_scale=0.5"], "views.crops.0.crop_scale", "a list of 2 numbers"),
    (["loss.params=3"], "loss.params", "a mapping of name: number"),
    (["data.limit=10", "data.fraction=0.5"], "data.limit / data.fraction", "at most one"),
    (["train.epochs"], "override 'train.epochs'", "key.sub=value"),
    (["=3"], "override '=3'", "key.sub=value"),
    (["train.epochs=[1"], "override 'train.epochs=[1'", "key.sub=value"),
    (["train.epochs=3", "train.epochs.x=1"], "override train.epochs.x", "key.sub=value"),
    (["views.crops.1=[1]"], "views.crops.1", "a mapping of blur_p"),
    (["model.encoder=small_cnn", "views.size=8"], "views.size: 8 is too small for model.encoder=small_cnn", ">= 16"),
    (["model.stem=imagenet", "views.size=16"], "views.size: 16 is too small for model.encoder=resnet18 with "
                                                "model.stem=imagenet", ">= 17"),
    (["train.resume=auto"], "train.resume: 'auto' needs train.run_name", "train.run_name=NAME"),
])
def test_bad_values_name_the_field_and_allowed_values(overrides, field, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    msg = str(err.value)
    assert field in msg and allowed in msg, msg
    assert "; allowed: " in msg.split(field, 1)[1]  # <field>: <what is wrong>; allowed: <what is allowed>
    assert "\n" not in msg  # one clear line


def test_loss_switches_are_booleans_from_yaml_and_overrides():
    cfg = load_config({"loss": {"name": "vicreg_tico", "params": {"nu": 0.01, "center": True}}},
                      ["loss.params.symmetric=true", "loss.params.offdiag=false"])
    assert cfg.loss.params == {"nu": 0.01, "center": True, "symmetric": True, "offdiag": False}
    assert all(type(cfg.loss.params[k]) is bool for k in ("center", "symmetric", "offdiag"))
    assert load_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg  # the run's config.yaml


def test_smallest_views_and_resume_auto_that_are_fine():
    assert load_config(None, ["model.encoder=small_cnn", "views.size=16"]).views.size == 16
    assert load_config(None, ["model.stem=cifar", "views.size=8"]).views.size == 8  # the CIFAR stem's minimum is 5
    assert load_config(None, ["views.size=96"]).model.stem == "auto"  # auto picks the ImageNet stem: >= 17
    assert load_config(None, ["train.resume=auto", "train.run_name=r"]).train.resume == "auto"


@pytest.mark.parametrize("name, content, problem", [
    ("folder", None, "is a folder; allowed: a YAML file"),
    ("missing.yaml", "", "not found; allowed: a YAML file"),
    ("bad.yaml", "train: epochs: 5\n", "not valid YAML (line 1, column 14: mapping values are not allowed here); "
                                       "allowed: a mapping of sections"),
    ("list.yaml", "- 1\n", "the top level is a list; allowed: a mapping of sections"),
    ("binary.pt", b"PK\x03\x04\xff\xfe", "not a text file; allowed: a YAML file"),
])
def test_config_file_problems_name_the_file(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content:
        path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"config file {path}: {problem}"), str(err.value)


def test_bad_config_cli_exits_2_and_writes_nothing(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"loss": {"name": "tico", "params": {"beta": 1.5}},
                                   "train": {"output_dir": str(tmp_path / "runs")}}))
    proc = subprocess.run([sys.executable, "-m", "sslray.train", str(cfg)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "beta" in proc.stderr and "[0, 1)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_local_paths_become_absolute_uris_and_auto_do_not(tmp_path, monkeypatch):
    """A config travels to Ray workers and Tune trials, which run in other working directories."""
    from sslray.config import absolute_overrides

    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.root=../d", "train.resume=auto", "train.run_name=r",
                             "scale.storage_path=s3://b/x", "data.cache_dir=~/c"])
    assert cfg.data.root == str(tmp_path.parent / "d") and cfg.train.output_dir == str(tmp_path / "runs")
    assert cfg.train.resume == "auto" and cfg.scale.storage_path == "s3://b/x"
    assert cfg.data.cache_dir == os.path.expanduser("~/c") and cfg.data.train_path is None
    assert absolute_overrides(["data.root=d", "optim.lr=0.3", "data.cache_dir=null", "train.output_dir=file:///o"]) == [
        f"data.root={tmp_path / 'd'}", "optim.lr=0.3", "data.cache_dir=null", "train.output_dir=file:///o"]


@pytest.mark.parametrize("name, params, dim", [
    ("simclr", {}, 8), ("vicreg", {"gamma": 1.0}, 8), ("vicreg", {"lam": "x"}, 8), ("tico", {}, None),
    ("tico", {"beta": 2.0}, 8), ("barlow", {"lambda_bt": -1.0}, 8),
    ("vicreg_tico", {}, 8), ("vicreg_tico", {"nu": 0.1, "symmetric": 0}, 8),
])
def test_build_loss_errors_say_what_is_allowed(name, params, dim):
    """validate() reports them as ``loss.params: <message>``: the message carries the allowed part."""
    from sslray.methods import build_loss

    with pytest.raises(ValueError) as err:
        build_loss(name, params, dim=dim)
    assert "; allowed: " in str(err.value) and "\n" not in str(err.value), str(err.value)
