"""Recipe validation: every error is one line naming the file and the key path."""

from pathlib import Path

import pytest

from workbench.recipe import RecipeError, load_recipe, parse_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
MINIMAL = {"run": {"name": "t"}, "model": "toy:arith"}


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_every_shipped_recipe_validates():
    for path in sorted(RECIPES.glob("*.yaml")):
        recipe = load_recipe(path)
        assert recipe.run.name
        assert path.read_text().startswith("#"), f"{path} must start with its launch command"


def test_train_entry_error_names_index_and_key(tmp_path):
    path = write(tmp_path, """
run: {name: t}
model: toy:arith
train:
  - {name: a, algorithm: dft}
  - {name: b, algorithm: rft}
  - {name: c, algorithm: dft, learning_rate: fast}
""")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: train[2].learning_rate: expected a number, got 'fast'"


def test_unknown_key_and_missing_key():
    with pytest.raises(RecipeError, match=r"x.yaml: generate.temprature: unknown key"):
        parse_recipe({**MINIMAL, "generate": {"temprature": 1.0}}, "x.yaml")
    with pytest.raises(RecipeError, match=r"x.yaml: model: missing required key"):
        parse_recipe({"run": {"name": "t"}}, "x.yaml")
    with pytest.raises(RecipeError, match=r"x.yaml: train\[0\].algorithm: unknown trainer 'nope'"):
        parse_recipe({**MINIMAL, "train": [{"name": "a", "algorithm": "nope"}]}, "x.yaml")
    with pytest.raises(RecipeError, match=r"train\[0\].bogus: unknown key"):
        parse_recipe({**MINIMAL, "train": [{"name": "a", "algorithm": "dft", "bogus": 1}]}, "x.yaml")


def test_duplicate_or_reserved_train_names():
    with pytest.raises(RecipeError, match=r"train\[1\].name"):
        parse_recipe({**MINIMAL, "train": [{"name": "a", "algorithm": "dft"},
                                           {"name": "a", "algorithm": "rft"}]}, "x.yaml")
    with pytest.raises(RecipeError, match=r"train\[0\].name"):
        parse_recipe({**MINIMAL, "train": [{"name": "base", "algorithm": "dft"}]}, "x.yaml")


def test_overrides_set_any_field():
    recipe = parse_recipe({**MINIMAL, "train": [{"name": "a", "algorithm": "dft"}]}, "x.yaml",
                          ["generate.temperature=0.5", "train[0].learning_rate=1e-4", "run.name=other",
                           "evaluate.benchmarks=[toy-id]"])
    assert recipe.generate.temperature == 0.5
    assert recipe.train[0].config.learning_rate == 1e-4
    assert recipe.run.name == "other"
    assert recipe.evaluate.benchmarks == ["toy-id"]
    with pytest.raises(RecipeError, match=r"x.yaml: generate.temperature: expected a number, got 'hot'"):
        parse_recipe(dict(MINIMAL), "x.yaml", ["generate.temperature=hot"])
    with pytest.raises(RecipeError, match="expected key.path=value"):
        parse_recipe(dict(MINIMAL), "x.yaml", ["generate.temperature"])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match=r"x.yaml: line \d+: not valid YAML"):
        load_recipe(write(tmp_path, "run: {name: t\nmodel: [\n"))
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml")
