"""Paths with spaces, ``#``, ``: ``, ``[``, ``=`` and non-ASCII letters round-trip through every
config edit, command, search and comparison.

They used to travel as ``key=value`` text that was read as YAML again: `` #`` started a comment
(``train.output_dir=/tmp/exp #1/trials`` became ``/tmp/exp``, so a search with ``--output "runs
#2"`` wrote every trial's folder and data cache outside its experiment) and ``: `` made a mapping.
"""
import json
import subprocess
import sys

import pytest
import yaml

from sslray.config import ConfigError, load_config, parse_overrides

ODD = "odd #1: ü [x]=y"  # every character that broke, in one folder name


@pytest.mark.parametrize("name", ["exp #1", "a: b", "[x", "k=v", "données", ODD])
def test_a_command_line_path_is_taken_as_written(tmp_path, name):
    path = f"/tmp/{name}/trials"
    cfg = load_config(None, [f"train.output_dir={path}", f"data.root={path}", f"data.cache_dir={path}/cache"])
    assert cfg.train.output_dir == cfg.data.root == path and cfg.data.cache_dir == f"{path}/cache"


def test_overrides_keep_their_types_and_nulls():
    changes = parse_overrides(["train.epochs=5", "views.crops.1.crop_scale=[0.2, 1]", "data.test_limit=null",
                               "data.cache_dir=", "train.run_name=007", "model.projector=512", "loss.params.mu=25",
                               "train.compile=true", "loss.uota.enabled=true"])
    assert changes == {"train.epochs": 5, "views.crops.1.crop_scale": [0.2, 1], "data.test_limit": None,
                       "data.cache_dir": None, "train.run_name": "007", "model.projector": "512",
                       "loss.params.mu": 25, "train.compile": "true", "loss.uota.enabled": True}
    cfg = load_config(None, ["train.compile=true", "train.run_name=007", "model.projector=512-512"])
    assert (cfg.train.compile, cfg.train.run_name, cfg.model.projector) == ("true", "007", "512-512")
    with pytest.raises(ConfigError, match=r"^train.epochs: 'five' is not an integer; allowed"):
        load_config(None, ["train.epochs=five"])
    with pytest.raises(ConfigError, match=r"^train: unknown key\(s\) epoch; allowed"):
        load_config(None, ["train.epoch=5"])


def test_typed_edits_keep_every_character(tmp_path):
    cfg = load_config(None).updated({"train.output_dir": str(tmp_path / ODD), "train.seed": 3,
                                     "views.crops.1.solarize_p": 0.3})
    assert cfg.train.output_dir == str(tmp_path / ODD) and cfg.train.seed == 3
    assert cfg.views.crops[1].solarize_p == 0.3 and cfg.views.crops[0].solarize_p == 0.1


def test_trial_and_final_configs_keep_the_experiment_folder(tmp_path):
    from sslray.compare.finals import final_config
    from sslray.search.space import load_search_space
    from sslray.search.trainable import trial_config
    from test_search import _space

    path, _ = _space(tmp_path)
    exp = tmp_path / ODD
    space = load_search_space(path, [f"data.root={exp / 'data'}"])
    cfg = trial_config(space, {"optim.lr": 0.01, "loss.params.nu": 0.1}, str(exp / "trials"), "t1")
    assert cfg.train.output_dir == str(exp / "trials") and cfg.data.cache_dir == str(exp / "data_cache")
    assert cfg.data.root == str(exp / "data") and cfg.train.run_name == "train-t1"
    final = final_config(space, {"optim.lr": 0.01, "loss.params.nu": 0.1}, 7, str(exp / "finals"), "a")
    assert final.train.output_dir == str(exp / "finals") and final.train.seed == 7


@pytest.mark.slow
def test_train_and_eval_commands_with_odd_paths(tmp_path, tiny_cfg):
    folder = tmp_path / ODD
    folder.mkdir()
    tiny_cfg["train"].update(epochs=1, output_dir="placeholder")
    config = folder / "my config #1.yaml"
    config.write_text(yaml.safe_dump(tiny_cfg))
    runs = folder / "runs"
    proc = subprocess.run([sys.executable, "-m", "sslray.train", str(config), f"train.output_dir={runs}",
                           "train.run_name=ü #1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = runs / "ü #1"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["output_dir"] == str(runs)
    proc = subprocess.run([sys.executable, "-m", "sslray.eval", str(run_dir), "eval.probe_epochs=1",
                           "--output", str(folder / "eval #1.json")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((folder / "eval #1.json").read_text())["epoch"] == 1


@pytest.mark.slow
def test_a_search_with_odd_paths_keeps_everything_inside_its_experiment(tmp_path):
    from test_search import _space

    path, doc = _space(tmp_path)
    doc["search"].update(num_trials=1, max_concurrent=1)
    doc["search"]["optuna"]["points_to_evaluate"] = doc["search"]["optuna"]["points_to_evaluate"][:1]
    doc["config"]["train"]["epochs"] = 1
    space_file = tmp_path / ODD / "space #1.yaml"
    space_file.parent.mkdir()
    space_file.write_text(yaml.safe_dump(doc))
    out = tmp_path / ODD / "runs #2"
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(space_file), "--output", str(out), "--name", "s",
                           "--num-cpus", "2"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = out / "s"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["outcomes"] == {"finished": 1}
    trial_dirs = list((exp / "trials").glob("train-*"))
    assert len(trial_dirs) == 1 and (trial_dirs[0] / "metrics.jsonl").exists()
    ran = yaml.safe_load((trial_dirs[0] / "config.yaml").read_text())
    assert ran["train"]["output_dir"] == str(exp / "trials")
    # nothing was written beside the experiment: the cut-off "…/odd" folder of the old bug is absent
    assert sorted(p.name for p in (tmp_path / ODD).iterdir()) == ["runs #2", "space #1.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ODD, "space.yaml"]
