"""Distillation settings are declared once (sslray.distill.stages.Settings) and reach the command
line as a recipe and as flags generated from the declarations."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from sslray.config import ConfigError
from sslray.distill.__main__ import build_parser, distill_settings, main
from sslray.distill.stages import Settings

RECIPE = Path(__file__).resolve().parents[1] / "sslray" / "recipes" / "cifar10_simclrv2_distill.yaml"


def _settings(*argv):
    return distill_settings(build_parser().parse_intermixed_args(["teacher.pt", *argv]))


@pytest.mark.parametrize("path", sorted(RECIPE.parent.glob("*_distill.yaml")), ids=lambda p: p.name)
def test_every_distillation_recipe_loads_and_validates(path):
    assert isinstance(_settings("--recipe", str(path)), Settings)


def test_the_recipe_writes_out_the_declared_defaults():
    assert dataclasses.asdict(_settings("--recipe", str(RECIPE))) == dataclasses.asdict(Settings())
    assert set(yaml.safe_load(RECIPE.read_text())) == {f.name for f in dataclasses.fields(Settings)}


def test_a_flag_overrides_the_recipe_and_the_recipe_the_defaults(tmp_path):
    recipe = tmp_path / "my recipe #1.yaml"
    recipe.write_text(yaml.safe_dump({"alpha": 0.25, "distill_epochs": 3, "optimizer": "lars"}))
    s = _settings("--recipe", str(recipe), "--distill-epochs", "5")
    assert (s.alpha, s.distill_epochs, s.optimizer, s.label_fraction) == (0.25, 5, "lars", 0.1)


@pytest.mark.parametrize("raw, message", [
    ({"alpha": 2.0}, "alpha: 2.0 is out of range; allowed: [0, 1]"),
    ({"optimizer": "adam"}, "optimizer: 'adam' is not allowed; allowed: sgd, lars"),
    ({"label_fractions": 0.1}, "unknown key(s) label_fractions; allowed: alpha, batch_size"),
    ({"distill_epochs": "ten"}, "distill_epochs: 'ten' is not an integer"),
])
def test_a_bad_recipe_is_one_line_naming_the_setting(tmp_path, raw, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        _settings("--recipe", str(recipe))
    assert str(e.value).startswith(f"--recipe {recipe}: ") and message in str(e.value), str(e.value)


def test_a_bad_recipe_exits_2_before_anything_is_written(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("alpha: 2\n")
    out = tmp_path / "out"
    assert main([str(tmp_path / "missing.pt"), "--recipe", str(recipe), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --recipe {recipe}: alpha: 2.0 is out of range") and "; allowed: " in err[0]
    assert not out.exists()
