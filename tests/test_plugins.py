"""Third-party trainers: registered through an entry point at test time, listed, and trained like built-ins."""

import json
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from workbench import registry
from workbench.recipe import parse_recipe
from workbench.template import TemplateConfig
from workbench.toy_model import save_random_toy_model
from workbench.trainers.base import TrainJob

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"
ENTRY_POINTS = """[workbench.trainers]
const-lr-sft = wb_example_plugin:ConstLRSFT
broken-one = wb_broken_plugin:Nothing
"""


@pytest.fixture
def installed(tmp_path):
    """Install tests/plugin_pkg as a distribution: a *.dist-info folder with entry_points.txt on sys.path."""
    info = tmp_path / "site" / "wb_example_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wb-example-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    sys.path[:0] = [str(tmp_path / "site"), str(PLUGIN_PKG)]
    registry.reload()
    yield
    sys.path.remove(str(tmp_path / "site"))
    sys.path.remove(str(PLUGIN_PKG))
    for mod in ("wb_example_plugin", "wb_broken_plugin"):
        sys.modules.pop(mod, None)
    registry.reload()


def test_plugin_is_listed_and_broken_one_reported(installed):
    trainers = registry.plugins(registry.TRAINERS)
    assert "const-lr-sft" in trainers
    assert {"sft", "rft", "dft", "dpo"} <= trainers.keys()  # the broken plugin hides none of the others
    broken = registry.broken_plugins(registry.TRAINERS)
    assert "broken on purpose" in broken["broken-one"]
    with pytest.raises(registry.PluginError, match="broken-one.*broken on purpose"):
        registry.get_trainer("broken-one")

    from workbench.cli import app

    result = CliRunner().invoke(app, ["algorithms"])
    assert result.exit_code == 0
    assert any(line.startswith("const-lr-sft\tconsumes positives") for line in result.stdout.splitlines())
    assert "broken-one\tBROKEN" in result.output


def test_plugin_config_in_a_recipe_and_training(installed, tmp_path):
    recipe = parse_recipe({"run": {"name": "t"}, "model": "toy:x",
                           "train": [{"name": "mine", "algorithm": "const-lr-sft", "learning_rate": 2e-3,
                                      "batch_size": 4, "per_device_batch_size": 2, "max_steps": 3}]})
    cfg = recipe.train[0].config
    assert type(cfg).__name__ == "ConstLRConfig" and cfg.lr_scheduler == "constant"

    data = pl.DataFrame({"prompt_id": ["a", "b"], "problem": ["12+7", "3+5"],
                         "response": ["12+7=19 \\boxed{19}", "3+5=8 \\boxed{8}"]})
    job = TrainJob(base_model=save_random_toy_model(tmp_path / "base"), data=data, template=TemplateConfig(),
                   out_dir=tmp_path / "mine")
    result = registry.get_trainer("const-lr-sft")().train(job, cfg)
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    assert result.steps == 3 and [r["learning_rate"] for r in rows] == [2e-3] * 3
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (job.model_dir / "config.json").is_file()
